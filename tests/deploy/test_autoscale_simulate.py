"""The HPA replay: kube-controller-manager's own unit-test cases, transcribed, and `simulate` end to end.

Cases named `k8s_*` come from `pkg/controller/podautoscaler/horizontal_test.go` and `replica_calculator_test.go`
(TestScalingWithRules, TestNormalizeDesiredReplicasWithBehavior, TestNormalizeDesiredReplicas, TestStoreScaleEvents,
TestCalculateScale{Up,Down}Limit..., TestConvertDesiredReplicasWithRules, TestReplicaCalc*PerPodCMExternal,
TestScaleUpPerPodCMExternal), with their numbers unchanged; Go's `time.Now()` is a fixed `NOW` here.
"""

import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from deploy.autoscale.controller import (
    MAX_INT32,
    HorizontalController,
    TimestampedRecommendation,
    TimestampedScaleEvent,
    Tolerances,
    calculate_scale_down_limit_with_behaviors,
    calculate_scale_up_limit,
    calculate_scale_up_limit_with_scaling_rules,
    convert_desired_replicas_with_rules,
    get_external_per_pod_metric_replicas,
    get_replicas_change_per_period,
)
from deploy.autoscale.hpa import (
    Behavior,
    InvalidAutoscaler,
    ScalingPolicy,
    ScalingRules,
    load_autoscaler,
    parse_autoscaler,
)
from deploy.autoscale.quantity import MAX_INT64, to_milli
from deploy.autoscale.simulate import InvalidTrace, read_trace

REPOSITORY = Path(__file__).resolve().parents[2]
ORDERS_HPA = REPOSITORY / "deploy/k8s/components/autoscaling/hpa-worker-orders.yaml"
NOW = Decimal(100_000)
MINUTE = 60
DEFAULT_TOLERANCES = Tolerances(scale_down=0.1, scale_up=0.1)


def default_scale_up() -> ScalingRules:
    """`GenerateHPAScaleUpRules(nil)`."""
    return parse_autoscaler(hpa_manifest(behavior={})).behavior.scale_up


def default_scale_down() -> ScalingRules:
    """`GenerateHPAScaleDownRules(nil)`, its window filled from the controller's 5-minute flag."""
    rules = parse_autoscaler(hpa_manifest(behavior={})).behavior.scale_down
    return ScalingRules(300, rules.select_policy, rules.policies)


def generate_scaling_rules(
    pods: int, pods_period: int, percent: int, percent_period: int, stabilization_window: int
) -> ScalingRules:
    """horizontal_test.go's `generateScalingRules` (selectPolicy Max)."""
    policies = []
    if pods:
        policies.append(ScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(stabilization_window, "Max", tuple(policies))


def generate_events_uniform_distribution(raw_events: list[int], period_seconds: int) -> list[TimestampedScaleEvent]:
    """horizontal_test.go's `generateEventsUniformDistribution`: one event in the middle of each segment."""
    segment = period_seconds / len(raw_events)
    events = []
    for index, change in enumerate(raw_events):
        boundary = int(period_seconds - segment * (index + 1) + segment / 2)  # time.Duration(float): truncated
        events.append(TimestampedScaleEvent(change, NOW - boundary))
    return events


def hpa_manifest(*, behavior=None, min_replicas=1, max_replicas=10, average_value="1"):
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker-orders"},
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": "shop_queue_backlog", "selector": {"matchLabels": {"queue_name": "orders"}}},
                    "target": {"type": "AverageValue", "averageValue": average_value},
                },
            }
        ],
    }
    if behavior is not None:
        spec["behavior"] = behavior
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "t"}, "spec": spec}


# --- replica_calculator_test.go: GetExternalPerPodMetricReplicas ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "current", "usage", "target", "tolerances", "expected"),
    [
        ("TestReplicaCalcScaleUpPerPodCMExternal", 3, 8600, 2150, DEFAULT_TOLERANCES, 4),
        ("TestReplicaCalcScaleDownPerPodCMExternal", 5, 8600, 2867, DEFAULT_TOLERANCES, 3),
        ("TestReplicaCalcTolerancePerPodCMExternal", 3, 8600, 2900, DEFAULT_TOLERANCES, 3),
        ("TestReplicaCalcConfigurableTolerancePerPodCMExternal", 3, 8600, 2800, Tolerances(0.1, 0.01), 4),
        ("TestExternalPerPodMetricReplicaOverflow", 1, MAX_INT64, 1, DEFAULT_TOLERANCES, MAX_INT32),
        ("TestExternalPerPodMetricUsageOverflow", 1, MAX_INT64, MAX_INT64, DEFAULT_TOLERANCES, 1),
    ],
)
def test_k8s_external_per_pod_replicas(name, current, usage, target, tolerances, expected):
    replicas = get_external_per_pod_metric_replicas(
        status_replicas=current, target_usage_per_pod=target, usage=usage, tolerances=tolerances
    )

    assert replicas == expected, name


def test_k8s_scale_up_per_pod_external_through_a_sync():
    """TestScaleUpPerPodCMExternal: min 2, max 6, 3 replicas, 8600m against an average of 2222m: 4."""
    spec = parse_autoscaler(hpa_manifest(min_replicas=2, max_replicas=6, average_value="2222m"))

    result = HorizontalController().sync(spec=spec, now=NOW, current_replicas=3, metric_total_milli=8600)

    assert (result.replicas, result.proposal) == (4, 4)


# --- horizontal_test.go: TestScalingWithRules (convertDesiredReplicasWithBehaviorRate) ------------------------------

# fmt: off
SCALING_WITH_RULES = [
    # name, up events, down events, min, max, scale-up rules, scale-down rules, current, desired, expected
    ("prenormalized desired replicas within range", [], [], 3, 8, None, None, 5, 7, 7),
    ("prenormalized desired replicas < minReplicas", [], [], 2, 8, None, None, 3, 1, 2),
    ("prenormalized desired replicas within range when minReplicas is 0", [], [], 0, 10, None, None, 1, 0, 0),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", [], [], 1, 10, None, None, 20, 1000, 10),
    ("desired replica count is more than the maximum replica count", [], [], 100, 150, None, None, 100, 1000, 150),
    (
        "scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies",
        [], [], 1, 2000, generate_scaling_rules(0, 0, 1, 60, 0), None, 3, 1000, 4,
    ),
    # Skipped in the Go test (testThis), its arithmetic holds all the same: 1000 - 20 pods a minute.
    (
        "scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies",
        [], [], 3, 2000, None, generate_scaling_rules(20, 60, 0, 0, 0), 1000, 3, 980,
    ),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20),
    (
        "scaleUp with pods policy larger than percent policy",
        [], [], 1, 1000, generate_scaling_rules(100, 60, 100, 60, 0), None, 10, 500, 110,
    ),
    (
        "scaleUp with percent policy larger than pods policy",
        [], [], 1, 1000, generate_scaling_rules(2, 60, 100, 60, 0), None, 10, 500, 20,
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large pod policy",
        [], [], 1, 1000, generate_scaling_rules(100, 60, 0, 0, 0), None, 10, 50, 50,
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large percent policy",
        [], [], 1, 1000, generate_scaling_rules(10000, 60, 0, 0, 0), None, 10, 50, 50,
    ),
    ("scaleUp with pod policy limitation", [], [], 1, 1000, generate_scaling_rules(30, 60, 0, 0, 0), None, 10, 50, 40),
    (
        "scaleUp with percent policy limitation",
        [], [], 1, 1000, generate_scaling_rules(0, 0, 200, 60, 0), None, 10, 50, 30,
    ),
    (
        "scaleDown with percent policy larger than pod policy",
        [], [], 1, 1000, None, generate_scaling_rules(20, 60, 1, 60, 300), 100, 2, 80,
    ),
    (
        "scaleDown with pod policy larger than percent policy",
        [], [], 1, 1000, None, generate_scaling_rules(2, 60, 1, 60, 300), 100, 2, 98,
    ),
    (
        "scaleDown with spec MinReplicas=nil limitation with large pod policy",
        [], [], 1, 1000, None, generate_scaling_rules(100, 60, 0, 0, 300), 10, 0, 1,
    ),
    (
        "scaleDown with spec MinReplicas limitation with large percent policy",
        [], [], 5, 1000, None, generate_scaling_rules(0, 0, 100, 60, 300), 10, 2, 5,
    ),
    ("scaleDown with pod policy limitation", [], [], 1, 1000, None, generate_scaling_rules(5, 60, 0, 0, 300), 10, 2, 5),
    (
        "scaleDown with percent policy limitation",
        [], [], 1, 1000, None, generate_scaling_rules(0, 0, 50, 60, 300), 10, 5, 5,
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large pod policy and events",
        [1, 5, 9], [], 1, 200, generate_scaling_rules(300, 60, 0, 0, 0), None, 100, 500, 200,
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large percent policy and events",
        [1, 5, 9], [], 1, 200, generate_scaling_rules(0, 0, 10000, 60, 0), None, 100, 500, 200,
    ),
    (
        "scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",
        [1, 5, 9], [], 1, 1000, generate_scaling_rules(5, 120, 0, 0, 0), None, 100, 500, 100,
    ),
    (
        "scaleUp with pod policy and previous scale up events",
        [1, 5, 9], [], 1, 1000, generate_scaling_rules(150, 120, 0, 0, 0), None, 100, 500, 235,
    ),
    (
        "scaleUp with percent policy and previous scale up events",
        [1, 5, 9], [], 1, 1000, generate_scaling_rules(0, 0, 200, 120, 0), None, 100, 500, 255,
    ),
    (
        "scaleUp with percent policy and previous scale up and down events",
        [4], [2], 1, 1000, generate_scaling_rules(0, 0, 300, 300, 0), None, 6, 24, 16,
    ),
    ("scaleDown with default policy and previous events", [], [1, 5, 9], 1, 1000, None, None, 10, 5, 5),
    (
        "scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events",
        [], [1, 5, 9], 1, 1000, None, generate_scaling_rules(115, 120, 0, 0, 300), 100, 0, 1,
    ),
    (
        "scaleDown with spec MinReplicas limitation with large pod policy and previous events",
        [], [1, 5, 9], 5, 1000, None, generate_scaling_rules(130, 120, 0, 0, 300), 100, 0, 5,
    ),
    (
        "scaleDown with spec MinReplicas limitation with large percent policy and previous events",
        [], [1, 5, 9], 5, 1000, None, generate_scaling_rules(0, 0, 100, 120, 300), 100, 2, 5,
    ),
    (
        "scaleDown with pod policy limitation and previous events",
        [], [1, 5, 9], 1, 1000, None, generate_scaling_rules(5, 120, 0, 0, 300), 100, 2, 100,
    ),
    (
        "scaleDown with percent policy limitation and previous events",
        [], [2, 4, 6], 1, 1000, None, generate_scaling_rules(0, 0, 50, 120, 300), 100, 0, 56,
    ),
    (
        "scaleDown with percent policy and previous scale up and down events",
        [2], [4], 1, 1000, None, generate_scaling_rules(0, 0, 50, 180, 0), 10, 1, 6,
    ),
    (
        "scaleDown with previous events preventing further scale down",
        [], [10, 10, 10], 1, 1000, None, generate_scaling_rules(0, 0, 10, 120, 300), 100, 0, 100,
    ),
    (
        "scaleDown with with previous events still allowing more scale down",
        [], [10, 10, 10], 1, 1000, None, generate_scaling_rules(0, 0, 1000, 120, 300), 10, 5, 5,
    ),
    (
        "check 'outdated' flag for events for one behavior for up",
        [8, 12, 9, 11], [], 1, 1000, generate_scaling_rules(1000, 60, 0, 0, 0), None, 100, 200, 200,
    ),
    (
        "check that events were not marked 'outdated' for two different policies in the behavior for up",
        [8, 12, 9, 11], [], 1, 1000, generate_scaling_rules(1000, 120, 100, 60, 0), None, 100, 200, 200,
    ),
    (
        "check that events were marked 'outdated' for two different policies in the behavior for up",
        [8, 12, 9, 11], [], 1, 1000, generate_scaling_rules(1000, 30, 100, 60, 0), None, 100, 200, 200,
    ),
    (
        "check 'outdated' flag for events for one behavior for down",
        [], [8, 12, 9, 11], 1, 1000, None, generate_scaling_rules(1000, 60, 0, 0, 300), 100, 5, 5,
    ),
    (
        "check that events were not marked 'outdated' for two different policies in the behavior for down",
        [], [8, 12, 9, 11], 1, 1000, None, generate_scaling_rules(1000, 120, 100, 60, 300), 100, 5, 5,
    ),
    (
        "check that events were marked 'outdated' for two different policies in the behavior for down",
        [], [8, 12, 9, 11], 1, 1000, None, generate_scaling_rules(1000, 30, 100, 60, 300), 100, 5, 5,
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("name", "up", "down", "minimum", "maximum", "up_rules", "down_rules", "current", "desired", "expected"),
    SCALING_WITH_RULES,
    ids=[case[0] for case in SCALING_WITH_RULES],
)
def test_k8s_scaling_with_rules(name, up, down, minimum, maximum, up_rules, down_rules, current, desired, expected):
    controller = HorizontalController(
        scale_up_events=generate_events_uniform_distribution(up, 120) if up else [],
        scale_down_events=generate_events_uniform_distribution(down, 120) if down else [],
    )
    behavior = Behavior(scale_up=up_rules or default_scale_up(), scale_down=down_rules or default_scale_down())

    replicas = controller.convert_desired_replicas_with_behavior_rate(
        now=NOW,
        current_replicas=current,
        desired_replicas=desired,
        min_replicas=minimum,
        max_replicas=maximum,
        behavior=behavior,
    )

    assert replicas == expected


# --- horizontal_test.go: TestNormalizeDesiredReplicasWithBehavior (stabilizeRecommendationWithBehaviors) ----------

# fmt: off
NORMALIZE_WITH_BEHAVIOR = [
    # name, recommendations (value, minutes ago), current, desired, up window, down window, expected, stored
    ("empty recommendations for scaling down", [], 100, 5, 0, 0, 5, [5]),
    ("simple scale down stabilization", [(4, 2), (5, 1)], 100, 3, 0, 180, 5, [4, 5, 3]),
    ("simple scale up stabilization", [(4, 2), (5, 1)], 1, 7, 300, 0, 4, [4, 5, 7]),
    ("no scale down stabilization", [(1, 2), (2, 1)], 100, 3, 300, 0, 3, [1, 2, 3]),
    ("no scale up stabilization", [(4, 2), (5, 1)], 1, 3, 0, 300, 3, [4, 5, 3]),
    ("no scale down stabilization, reuse recommendation element", [(10, 10), (9, 9)], 100, 3, 0, 0, 3, [10, 3]),
    ("no scale up stabilization, reuse recommendation element", [(10, 10), (9, 9)], 1, 100, 0, 0, 100, [10, 100]),
    (
        "scale down stabilization, reuse one of obsolete recommendation element",
        [(10, 10), (4, 1), (5, 2), (9, 9)], 100, 3, 0, 180, 5, [10, 4, 5, 3],
    ),
    (
        "scale up stabilization, reuse one of obsolete recommendation element",
        [(10, 100), (6, 1), (5, 2), (9, 3)], 1, 100, 300, 0, 5, [100, 6, 5, 9],
    ),
    (
        "scale up and down stabilization, do not scale up when prenormalized rec goes down",
        [(2, 100), (3, 3)], 2, 1, 300, 300, 2, None,
    ),
    (
        "scale up and down stabilization, do not scale down when prenormalized rec goes up",
        [(2, 100), (1, 3)], 2, 3, 300, 300, 2, None,
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("name", "recommendations", "current", "desired", "up_window", "down_window", "expected", "stored"),
    NORMALIZE_WITH_BEHAVIOR,
    ids=[case[0] for case in NORMALIZE_WITH_BEHAVIOR],
)
def test_k8s_normalize_desired_replicas_with_behavior(
    name, recommendations, current, desired, up_window, down_window, expected, stored
):
    controller = HorizontalController(
        recommendations=[TimestampedRecommendation(value, NOW - minutes * MINUTE) for value, minutes in recommendations]
    )

    replicas = controller.stabilize_recommendation_with_behaviors(
        now=NOW,
        current_replicas=current,
        prenormalized=desired,
        scale_up=ScalingRules(up_window, "Max", ()),
        scale_down=ScalingRules(down_window, "Max", ()),
    )

    assert replicas == expected
    if stored is not None:
        assert [entry.recommendation for entry in controller.recommendations] == stored


# --- horizontal_test.go: TestNormalizeDesiredReplicas (the legacy path, 5-minute downscale window) ----------------


@pytest.mark.parametrize(
    ("name", "recommendations", "desired", "expected", "log_length"),
    [
        ("empty log", [], 5, 5, 1),
        ("stabilize", [(4, 2), (5, 1)], 3, 5, 3),
        ("no stabilize", [(1, 2), (2, 1)], 3, 3, 3),
        ("no stabilize - old recommendations", [(10, 10), (9, 9)], 3, 3, 2),
        ("stabilize - old recommendations", [(10, 10), (4, 1), (5, 2), (9, 9)], 3, 5, 4),
    ],
)
def test_k8s_normalize_desired_replicas(name, recommendations, desired, expected, log_length):
    controller = HorizontalController(
        downscale_stabilization_seconds=5 * MINUTE,
        recommendations=[
            TimestampedRecommendation(value, NOW - minutes * MINUTE) for value, minutes in recommendations
        ],
    )

    replicas = controller.stabilize_recommendation(now=NOW, prenormalized=desired)

    assert (replicas, len(controller.recommendations)) == (expected, log_length)


# --- horizontal_test.go: TestStoreScaleEvents -----------------------------------------------------------------------

# fmt: off
STORE_SCALE_EVENTS = [
    # name, previous events (change, seconds ago), rules, expected change in the last 60 s, events after storing +5
    ("empty entries with default behavior", [], None, 0, []),
    ("empty entries with two-policy-behavior", [], generate_scaling_rules(10, 60, 100, 60, 0), 0, [(5, False)]),
    ("one outdated entry to be kept untouched without behavior", [(7, 61)], None, 0, [(7, False)]),
    (
        "one outdated entry to be replaced with behavior",
        [(7, 61)], generate_scaling_rules(10, 60, 100, 60, 0), 0, [(5, False)],
    ),
    (
        "one actual entry to be not touched with behavior",
        [(7, 58)], generate_scaling_rules(10, 60, 100, 60, 0), 7, [(7, False), (5, False)],
    ),
    (
        "two entries, one of them to be replaced",
        [(7, 61), (6, 59)], generate_scaling_rules(10, 60, 0, 0, 0), 6, [(5, False), (6, False)],
    ),
    (
        "replace one entry, use policies with different periods",
        [(8, 29), (6, 59), (7, 61), (9, 61)],
        generate_scaling_rules(10, 60, 100, 30, 0),
        14,
        [(8, False), (6, False), (7, True), (5, False)],
    ),
    (
        "two entries, both actual",
        [(7, 58), (6, 59)], generate_scaling_rules(10, 120, 100, 30, 0), 13, [(7, False), (6, False), (5, False)],
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("name", "previous", "rules", "expected_change", "expected_events"),
    STORE_SCALE_EVENTS,
    ids=[case[0] for case in STORE_SCALE_EVENTS],
)
@pytest.mark.parametrize("direction", ["up", "down"])
def test_k8s_store_scale_events(name, previous, rules, expected_change, expected_events, direction):
    events = [TimestampedScaleEvent(change, NOW - seconds) for change, seconds in previous]
    controller = HorizontalController(**{f"scale_{direction}_events": events})
    behavior = None
    if rules is not None:
        behavior = Behavior(
            scale_up=rules if direction == "up" else default_scale_up(),
            scale_down=rules if direction == "down" else default_scale_down(),
        )

    change = get_replicas_change_per_period(period_seconds=60, scale_events=events, now=NOW)
    controller.store_scale_event(
        behavior=behavior, now=NOW, previous_replicas=10, new_replicas=15 if direction == "up" else 5
    )

    assert change == expected_change
    stored = controller.scale_up_events if direction == "up" else controller.scale_down_events
    assert [(event.replica_change, event.outdated) for event in stored] == expected_events


# --- horizontal_test.go: the limit helpers and the legacy conversion ----------------------------------------------


def test_k8s_calculate_scale_up_limit_with_scaling_rules():
    rules = ScalingRules(300, "Min", (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)))

    limit = calculate_scale_up_limit_with_scaling_rules(
        current_replicas=1, scale_up_events=[], scale_down_events=[], rules=rules, now=NOW
    )

    assert limit == 2


def test_k8s_calculate_scale_down_limit_with_behaviors():
    rules = ScalingRules(300, "Min", (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)))

    limit = calculate_scale_down_limit_with_behaviors(
        current_replicas=5, scale_up_events=[], scale_down_events=[], rules=rules, now=NOW
    )

    assert limit == 3


@pytest.mark.parametrize(
    ("name", "current", "desired", "minimum", "maximum", "expected"),
    [
        ("prenormalized desired replicas within range", 5, 7, 3, 8, 7),
        ("prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2),
        ("prenormalized desired zeroed replicas within range", 1, 0, 0, 10, 0),
        ("maxReplicas is the limit because maxReplicas < scaleUpLimit", 20, 1000, 1, 10, 10),
        # The Go test package raises scaleUpLimitFactor to 8 and expects calculateScaleUpLimit(3); the controller's
        # factor is 2, so the limit is max(2 x 3, 4) = 6.
        ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas", 3, 1000, 1, 2000, 6),
    ],
)
def test_k8s_convert_desired_replicas_with_rules(name, current, desired, minimum, maximum, expected):
    replicas = convert_desired_replicas_with_rules(
        current_replicas=current, desired_replicas=desired, min_replicas=minimum, max_replicas=maximum
    )

    assert replicas == expected
    assert calculate_scale_up_limit(3) == 6


# --- our cases: defaults, the paths around the metric ---------------------------------------------------------------


def test_defaults_fill_what_behavior_leaves_out():
    only_scale_down = {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    spec = parse_autoscaler(hpa_manifest(behavior=only_scale_down))
    without_min = hpa_manifest()
    del without_min["spec"]["minReplicas"]

    assert spec.behavior.scale_up == ScalingRules(
        0, "Max", (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15))
    )
    assert spec.behavior.scale_down == ScalingRules(None, "Max", (ScalingPolicy("Pods", 1, 60),))
    assert parse_autoscaler(hpa_manifest()).behavior is None
    assert parse_autoscaler(without_min).min_replicas == 1


def test_an_unset_scale_down_window_takes_the_controller_flag_and_its_edge_is_exclusive():
    spec = parse_autoscaler(hpa_manifest(behavior={}, max_replicas=10))
    controller = HorizontalController(downscale_stabilization_seconds=60)

    replicas = [controller.sync(spec=spec, now=Decimal(0), current_replicas=8, metric_total_milli=to_milli(8)).replicas]
    for now in (59, 60):
        replicas.append(
            controller.sync(spec=spec, now=Decimal(now), current_replicas=replicas[-1], metric_total_milli=0).replicas
        )

    # The 8 recommended at 0 holds at 59 (0 > 59 - 60) and no longer at 60 (0 > 0 is false); then 100 % per 15 s
    # would allow 0, minReplicas keeps 1.
    assert replicas == [8, 8, 1]


def test_the_legacy_path_without_behavior_keeps_the_highest_recommendation_of_five_minutes():
    spec = parse_autoscaler(hpa_manifest(max_replicas=10))
    controller = HorizontalController()

    replicas = [controller.sync(spec=spec, now=Decimal(0), current_replicas=1, metric_total_milli=to_milli(9)).replicas]
    for now in (15, 300, 301):
        replicas.append(
            controller.sync(spec=spec, now=Decimal(now), current_replicas=replicas[-1], metric_total_milli=0).replicas
        )

    # 9 wanted at 0: up to max(2 x 1, 4) = 4, then 8 at 15 s although the metric is 0 (the 9 is the highest
    # recommendation of the window), 9 at 300 s (the legacy window includes its edge: !Before(cutoff)), 1 at 301 s.
    assert replicas == [4, 8, 9, 1]


def test_outside_the_bounds_the_controller_goes_straight_to_them_and_counts_it_as_a_scale_event():
    spec = parse_autoscaler(hpa_manifest(behavior={}, min_replicas=2, max_replicas=5))
    controller = HorizontalController()

    above = controller.sync(spec=spec, now=NOW, current_replicas=9, metric_total_milli=None)
    below = controller.sync(spec=spec, now=NOW + 15, current_replicas=1, metric_total_milli=None)

    assert (above.replicas, below.replicas) == (5, 2)
    assert [(event.replica_change, event.timestamp) for event in controller.scale_down_events] == [(4, NOW)]
    assert [(event.replica_change, event.timestamp) for event in controller.scale_up_events] == [(1, NOW + 15)]


def test_no_metric_value_leaves_the_replicas_alone_and_zero_replicas_disable_scaling():
    spec = parse_autoscaler(hpa_manifest(behavior={}, min_replicas=1, max_replicas=5))
    controller = HorizontalController()

    missing = controller.sync(spec=spec, now=NOW, current_replicas=3, metric_total_milli=None)
    disabled = controller.sync(spec=spec, now=NOW + 15, current_replicas=0, metric_total_milli=to_milli(100))

    assert (missing.replicas, missing.proposal, disabled.replicas) == (3, None, 0)


def test_a_tolerance_per_direction_is_read_from_behavior():
    with_tolerance = parse_autoscaler(
        hpa_manifest(behavior={"scaleUp": {"tolerance": "0.01"}}, max_replicas=10, average_value="2800m")
    )
    without = parse_autoscaler(hpa_manifest(behavior={}, max_replicas=10, average_value="2800m"))

    tight = HorizontalController().sync(spec=with_tolerance, now=NOW, current_replicas=3, metric_total_milli=8600)
    default = HorizontalController().sync(spec=without, now=NOW, current_replicas=3, metric_total_milli=8600)

    # TestReplicaCalcConfigurableTolerancePerPodCMExternal's numbers through a whole sync: 8600 / (3 x 2800) = 1.024.
    assert with_tolerance.behavior.scale_up.tolerance == 0.01
    assert (tight.replicas, default.replicas) == (4, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apiVersion": "autoscaling/v1"}, "only autoscaling/v2"),
        ({"spec": {"maxReplicas": 1, "minReplicas": 2, "metrics": []}}, "min <= max"),
    ],
)
def test_manifests_the_replay_cannot_stand_for_are_refused(change, message):
    with pytest.raises(InvalidAutoscaler, match=message):
        parse_autoscaler({**hpa_manifest(), **change})


def test_other_metric_types_are_refused():
    manifest = hpa_manifest()
    manifest["spec"]["metrics"][0]["external"]["target"] = {"type": "Value", "value": "100"}

    with pytest.raises(InvalidAutoscaler, match="AverageValue"):
        parse_autoscaler(manifest)


def test_a_trace_must_have_the_header_and_increasing_times():
    with pytest.raises(InvalidTrace, match="header"):
        read_trace(io.StringIO("t,v\n0,1\n"))
    with pytest.raises(InvalidTrace, match="line 3: seconds 15 is not after 15"):
        read_trace(io.StringIO("seconds,value\n15,1\n15,2\n"))
    with pytest.raises(InvalidTrace, match="line 2"):
        read_trace(io.StringIO("seconds,value\n0,lots\n"))


# --- the CLI end to end, on the shipped orders HPA ------------------------------------------------------------------

ORDERS_TRACE = """seconds,value
0,0
15,18000
30,18000
45,36000
60,36000
75,0
345,0
360,0
375,0
435,0
450,
"""
# Worked by hand from hpa-worker-orders.yaml (target 1800, min 2, max 20; up: Max of 100 % and 4 pods per 15 s;
# down: 300 s window, then Max of 20 % and 1 pod per 60 s):
# 15: 18000/1800 = 10 wanted, 2 + max(100 %, 4) = 6 allowed   30: 6 -> 10 (the +4 at 15 s is not after 30 - 15)
# 45: 20 (max)   60: ratio 1.0, within the tolerance   75-345: 0 wanted, the 20 recommended at 45 and 60 hold
# 360: the last 20 (at 60) is not after 360 - 300: down by 20 % = 16   375: the -4 at 360 counts, still 16
# 435: the -4 at 360 is not after 435 - 60: 16 x 0.8 = 12.8 -> 12   450: no value, no decision
ORDERS_REPLAY = """seconds,value,replicas
0,0,2
15,18000,6
30,18000,10
45,36000,20
60,36000,20
75,0,20
345,0,20
360,0,16
375,0,16
435,0,12
450,,12
"""


def test_simulate_replays_the_shipped_orders_hpa(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(ORDERS_TRACE)

    result = subprocess.run(
        [sys.executable, "-m", "deploy.autoscale", "simulate", "--hpa", str(ORDERS_HPA), "--trace", str(trace)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == ORDERS_REPLAY


def test_simulate_starts_from_initial_replicas_and_reports_bad_input(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("seconds,value\n0,1800\n")
    command = [sys.executable, "-m", "deploy.autoscale", "simulate", "--hpa", str(ORDERS_HPA), "--trace", str(trace)]

    started = subprocess.run(
        [*command, "--initial-replicas", "7"], cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False
    )
    trace.write_text("seconds,backlog\n0,1\n")
    refused = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False)

    # 1800 over 7 pods is far below target: the 300 s window holds the 7 recommended at the first sync.
    assert started.stdout == "seconds,value,replicas\n0,1800,7\n"
    assert refused.returncode == 2
    assert "header must be 'seconds,value'" in refused.stderr


def test_load_autoscaler_reads_every_shipped_hpa():
    specs = [load_autoscaler(path) for path in sorted(ORDERS_HPA.parent.glob("hpa-*.yaml"))]

    assert [(spec.name, spec.metric.target_average_milli) for spec in specs] == [
        ("worker-heavy", 3000),
        ("worker-io", 7_200_000),
        ("worker-maintenance", 30_000),
        ("worker-orders", 1_800_000),
    ]
