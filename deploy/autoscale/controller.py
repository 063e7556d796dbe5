"""The HPA v2 controller's arithmetic for one `External` metric with an `AverageValue` target, sync by sync.

A transcription of kube-controller-manager's `pkg/controller/podautoscaler` (`horizontal.go`: `reconcileAutoscaler`,
`stabilizeRecommendation[WithBehaviors]`, `convertDesiredReplicasWithBehaviorRate`, `storeScaleEvent`, ...;
`replica_calculator.go`: `GetExternalPerPodMetricReplicas`), with the wall clock replaced by the time each sync is
given. Names follow the Go code so the two can be read side by side. What it leaves out, because the replay has
no use for it: pod readiness (pods are ready at once, so status replicas equal spec replicas), HPA conditions and
events, and metric types other than External/AverageValue.
"""

import math
from dataclasses import dataclass, field
from decimal import Decimal

from deploy.autoscale.hpa import AutoscalerSpec, Behavior, ScalingRules
from deploy.autoscale.quantity import MAX_INT64

# kube-controller-manager's flags and their defaults (`--horizontal-pod-autoscaler-tolerance`,
# `--horizontal-pod-autoscaler-downscale-stabilization`).
DEFAULT_TOLERANCE = 0.1
DEFAULT_DOWNSCALE_STABILIZATION_SECONDS = 300
# The legacy path (no `behavior`): scale up at most to max(2 x current, 4) per sync (horizontal.go).
LEGACY_SCALE_UP_LIMIT_FACTOR = 2.0
LEGACY_SCALE_UP_LIMIT_MINIMUM = 4.0
MAX_INT32 = 2**31 - 1
MIN_INT32 = -(2**31)


@dataclass
class TimestampedRecommendation:
    recommendation: int
    timestamp: Decimal


@dataclass
class TimestampedScaleEvent:
    replica_change: int  # always positive: scale-ups and scale-downs are kept in separate lists
    timestamp: Decimal
    outdated: bool = False


@dataclass(frozen=True)
class Tolerances:
    scale_down: float
    scale_up: float

    def is_within(self, usage_ratio: float) -> bool:
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


@dataclass(frozen=True)
class SyncResult:
    """What one sync decided: the replicas after it, and the metric proposal before normalisation (None if none)."""

    replicas: int
    proposal: int | None


@dataclass
class HorizontalController:
    """The controller's state for one HPA: its recommendations and scale events, as `horizontal.go` keeps them."""

    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization_seconds: int = DEFAULT_DOWNSCALE_STABILIZATION_SECONDS
    recommendations: list[TimestampedRecommendation] | None = None
    scale_up_events: list[TimestampedScaleEvent] = field(default_factory=list)
    scale_down_events: list[TimestampedScaleEvent] = field(default_factory=list)

    def sync(
        self, *, spec: AutoscalerSpec, now: Decimal, current_replicas: int, metric_total_milli: int | None
    ) -> SyncResult:
        """`reconcileAutoscaler` at time `now`; `metric_total_milli` None means the metrics API returned nothing."""
        self._record_initial_recommendation(current_replicas=current_replicas, now=now)
        min_replicas = spec.min_replicas
        if current_replicas == 0 and min_replicas != 0:
            return SyncResult(replicas=0, proposal=None)  # autoscaling is disabled while the target is scaled to 0
        if current_replicas > spec.max_replicas:
            desired = spec.max_replicas
        elif current_replicas < min_replicas:
            desired = min_replicas
        else:
            if metric_total_milli is None:
                # Every metric failed (FailedGetExternalMetric): the controller returns before deciding anything.
                return SyncResult(replicas=current_replicas, proposal=None)
            proposal = get_external_per_pod_metric_replicas(
                status_replicas=current_replicas,
                target_usage_per_pod=spec.metric.target_average_milli,
                usage=metric_total_milli,
                tolerances=self._tolerances(spec.behavior),
            )
            desired = max(0, proposal)
            if spec.behavior is None:
                desired = self._normalize_desired_replicas(
                    spec=spec, now=now, current_replicas=current_replicas, prenormalized=desired
                )
            else:
                desired = self._normalize_desired_replicas_with_behaviors(
                    spec=spec, now=now, current_replicas=current_replicas, prenormalized=desired
                )
            if desired == current_replicas:
                return SyncResult(replicas=current_replicas, proposal=proposal)
            self.store_scale_event(
                behavior=spec.behavior, now=now, previous_replicas=current_replicas, new_replicas=desired
            )
            return SyncResult(replicas=desired, proposal=proposal)
        self.store_scale_event(
            behavior=spec.behavior, now=now, previous_replicas=current_replicas, new_replicas=desired
        )
        return SyncResult(replicas=desired, proposal=None)

    # --- recommendations -------------------------------------------------------------------------------------------

    def _record_initial_recommendation(self, *, current_replicas: int, now: Decimal) -> None:
        if self.recommendations is None:
            self.recommendations = [TimestampedRecommendation(current_replicas, now)]

    def _tolerances(self, behavior: Behavior | None) -> Tolerances:
        """The cluster-wide tolerance, unless `behavior` sets one per direction (HPAConfigurableTolerance)."""
        if behavior is None:
            return Tolerances(scale_down=self.tolerance, scale_up=self.tolerance)
        return Tolerances(
            scale_down=self.tolerance if behavior.scale_down.tolerance is None else behavior.scale_down.tolerance,
            scale_up=self.tolerance if behavior.scale_up.tolerance is None else behavior.scale_up.tolerance,
        )

    def stabilize_recommendation(self, *, now: Decimal, prenormalized: int) -> int:
        """Legacy path: the highest recommendation not older than the downscale window (`!Before(cutoff)`)."""
        recommendations = self._recommendations()
        max_recommendation = prenormalized
        old_sample_index = None
        cutoff = now - self.downscale_stabilization_seconds
        for index, recommendation in enumerate(recommendations):
            if recommendation.timestamp < cutoff:
                old_sample_index = index
            elif recommendation.recommendation > max_recommendation:
                max_recommendation = recommendation.recommendation
        self._store_recommendation(index=old_sample_index, recommendation=prenormalized, now=now)
        return max_recommendation

    def stabilize_recommendation_with_behaviors(
        self,
        *,
        now: Decimal,
        current_replicas: int,
        prenormalized: int,
        scale_up: ScalingRules,
        scale_down: ScalingRules,
    ) -> int:
        """Current replicas clamped between the lowest recommendation of the scale-up window and the highest of the
        scale-down window; a recommendation counts when it is strictly after `now - window` (`After(cutoff)`)."""
        recommendations = self._recommendations()
        up_cutoff = now - self._window(scale_up)
        down_cutoff = now - self._window(scale_down)
        up_recommendation = prenormalized
        down_recommendation = prenormalized
        old_sample_index = None
        for index, recommendation in enumerate(recommendations):
            if recommendation.timestamp > up_cutoff:
                up_recommendation = min(recommendation.recommendation, up_recommendation)
            if recommendation.timestamp > down_cutoff:
                down_recommendation = max(recommendation.recommendation, down_recommendation)
            if recommendation.timestamp < up_cutoff and recommendation.timestamp < down_cutoff:
                old_sample_index = index
        stabilized = current_replicas
        stabilized = max(stabilized, up_recommendation)
        stabilized = min(stabilized, down_recommendation)
        self._store_recommendation(index=old_sample_index, recommendation=prenormalized, now=now)
        return stabilized

    def _window(self, rules: ScalingRules) -> int:
        """`maybeInitScaleDownStabilizationWindow`: an unset window takes the controller's downscale flag."""
        if rules.stabilization_window_seconds is None:
            return self.downscale_stabilization_seconds
        return rules.stabilization_window_seconds

    def _recommendations(self) -> list[TimestampedRecommendation]:
        if self.recommendations is None:
            self.recommendations = []
        return self.recommendations

    def _store_recommendation(self, *, index: int | None, recommendation: int, now: Decimal) -> None:
        """Reuse the last sample too old for every window, else append (bounded memory, as in the Go code)."""
        entry = TimestampedRecommendation(recommendation, now)
        if index is None:
            self._recommendations().append(entry)
        else:
            self._recommendations()[index] = entry

    # --- normalisation ---------------------------------------------------------------------------------------------

    def _normalize_desired_replicas(
        self, *, spec: AutoscalerSpec, now: Decimal, current_replicas: int, prenormalized: int
    ) -> int:
        stabilized = self.stabilize_recommendation(now=now, prenormalized=prenormalized)
        return convert_desired_replicas_with_rules(
            current_replicas=current_replicas,
            desired_replicas=stabilized,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
        )

    def _normalize_desired_replicas_with_behaviors(
        self, *, spec: AutoscalerSpec, now: Decimal, current_replicas: int, prenormalized: int
    ) -> int:
        behavior = spec.behavior
        assert behavior is not None  # noqa: S101 - the caller took the behavior branch
        stabilized = self.stabilize_recommendation_with_behaviors(
            now=now,
            current_replicas=current_replicas,
            prenormalized=prenormalized,
            scale_up=behavior.scale_up,
            scale_down=behavior.scale_down,
        )
        return self.convert_desired_replicas_with_behavior_rate(
            now=now,
            current_replicas=current_replicas,
            desired_replicas=stabilized,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            behavior=behavior,
        )

    def convert_desired_replicas_with_behavior_rate(
        self,
        *,
        now: Decimal,
        current_replicas: int,
        desired_replicas: int,
        min_replicas: int,
        max_replicas: int,
        behavior: Behavior,
    ) -> int:
        """Limit the change to what the rate policies allow since the start of each policy's period."""
        if desired_replicas > current_replicas:
            scale_up_limit = calculate_scale_up_limit_with_scaling_rules(
                current_replicas=current_replicas,
                scale_up_events=self.scale_up_events,
                scale_down_events=self.scale_down_events,
                rules=behavior.scale_up,
                now=now,
            )
            scale_up_limit = max(scale_up_limit, current_replicas)  # never below current while old events age out
            return min(desired_replicas, max_replicas, scale_up_limit)
        if desired_replicas < current_replicas:
            scale_down_limit = calculate_scale_down_limit_with_behaviors(
                current_replicas=current_replicas,
                scale_up_events=self.scale_up_events,
                scale_down_events=self.scale_down_events,
                rules=behavior.scale_down,
                now=now,
            )
            scale_down_limit = min(scale_down_limit, current_replicas)
            return max(desired_replicas, min_replicas, scale_down_limit)
        return desired_replicas

    # --- scale events ----------------------------------------------------------------------------------------------

    def store_scale_event(
        self, *, behavior: Behavior | None, now: Decimal, previous_replicas: int, new_replicas: int
    ) -> None:
        """Remember a rescale for the rate policies (only with `behavior`: the legacy path keeps no events)."""
        if behavior is None:
            return
        if new_replicas > previous_replicas:
            events, rules, change = self.scale_up_events, behavior.scale_up, new_replicas - previous_replicas
        else:
            events, rules, change = self.scale_down_events, behavior.scale_down, previous_replicas - new_replicas
        mark_scale_events_outdated(events, longest_policy_period=rules.longest_policy_period, now=now)
        outdated_index = None
        for index, event in enumerate(events):
            if event.outdated:
                outdated_index = index
        new_event = TimestampedScaleEvent(change, now)
        if outdated_index is None:
            events.append(new_event)
        else:
            events[outdated_index] = new_event


def get_external_per_pod_metric_replicas(
    *, status_replicas: int, target_usage_per_pod: int, usage: int, tolerances: Tolerances
) -> int:
    """`GetExternalPerPodMetricReplicas`: ceil(total / target) once the ratio to the current replicas leaves the
    tolerance. Float arithmetic on purpose: it is float64 in Go, and the rounding must be the same."""
    usage = min(usage, MAX_INT64)
    replica_count = status_replicas
    usage_ratio = go_float_divide(float(usage), float(target_usage_per_pod) * float(replica_count))
    if not tolerances.is_within(usage_ratio):
        replica_count_result = math.ceil(float(usage) / float(target_usage_per_pod))
        replica_count = MAX_INT32 if replica_count_result > MAX_INT32 else int(replica_count_result)
    return replica_count


def go_float_divide(numerator: float, denominator: float) -> float:
    """float64 division as Go does it: x / 0 is +Inf, 0 / 0 is NaN (only with 0 replicas, under HPAScaleToZero)."""
    if denominator == 0.0:
        return math.nan if numerator == 0.0 else math.copysign(math.inf, numerator)
    return numerator / denominator


def convert_desired_replicas_with_rules(
    *, current_replicas: int, desired_replicas: int, min_replicas: int, max_replicas: int
) -> int:
    """Legacy path: between minReplicas and the lower of maxReplicas and max(2 x current, 4)."""
    scale_up_limit = calculate_scale_up_limit(current_replicas)
    maximum_allowed = scale_up_limit if max_replicas > scale_up_limit else max_replicas
    if desired_replicas < min_replicas:
        return min_replicas
    if desired_replicas > maximum_allowed:
        return maximum_allowed
    return desired_replicas


def calculate_scale_up_limit(current_replicas: int) -> int:
    return int(max(LEGACY_SCALE_UP_LIMIT_FACTOR * float(current_replicas), LEGACY_SCALE_UP_LIMIT_MINIMUM))


def get_replicas_change_per_period(
    *, period_seconds: int, scale_events: list[TimestampedScaleEvent], now: Decimal
) -> int:
    """The replicas changed by events strictly after `now - period`."""
    cutoff = now - period_seconds
    return sum(event.replica_change for event in scale_events if event.timestamp > cutoff)


def mark_scale_events_outdated(
    scale_events: list[TimestampedScaleEvent], *, longest_policy_period: int, now: Decimal
) -> None:
    cutoff = now - longest_policy_period
    for event in scale_events:
        if event.timestamp < cutoff:
            event.outdated = True


def calculate_scale_up_limit_with_scaling_rules(
    *,
    current_replicas: int,
    scale_up_events: list[TimestampedScaleEvent],
    scale_down_events: list[TimestampedScaleEvent],
    rules: ScalingRules,
    now: Decimal,
) -> int:
    """The most replicas the scale-up policies allow, each counted from the replicas at the start of its period."""
    if rules.select_policy == "Disabled":
        return current_replicas
    if rules.select_policy == "Min":
        result, select = MAX_INT32, min
    else:
        result, select = MIN_INT32, max
    for policy in rules.policies:
        added = get_replicas_change_per_period(
            period_seconds=policy.period_seconds, scale_events=scale_up_events, now=now
        )
        deleted = get_replicas_change_per_period(
            period_seconds=policy.period_seconds, scale_events=scale_down_events, now=now
        )
        period_start_replicas = current_replicas - added + deleted
        if policy.type == "Pods":
            proposed = period_start_replicas + policy.value
        else:
            # Rounded up, "because the proposed change might not increase the replica count" (horizontal.go).
            proposed = math.ceil(float(period_start_replicas) * (1 + float(policy.value) / 100))
        result = select(result, proposed)
    return result


def calculate_scale_down_limit_with_behaviors(
    *,
    current_replicas: int,
    scale_up_events: list[TimestampedScaleEvent],
    scale_down_events: list[TimestampedScaleEvent],
    rules: ScalingRules,
    now: Decimal,
) -> int:
    """The fewest replicas the scale-down policies allow, each counted from the replicas at the start of its period."""
    if rules.select_policy == "Disabled":
        return current_replicas
    if rules.select_policy == "Min":
        result, select = MIN_INT32, max
    else:
        result, select = MAX_INT32, min
    for policy in rules.policies:
        added = get_replicas_change_per_period(
            period_seconds=policy.period_seconds, scale_events=scale_up_events, now=now
        )
        deleted = get_replicas_change_per_period(
            period_seconds=policy.period_seconds, scale_events=scale_down_events, now=now
        )
        period_start_replicas = current_replicas - added + deleted
        if policy.type == "Pods":
            proposed = period_start_replicas - policy.value
        else:
            proposed = int(float(period_start_replicas) * (1 - float(policy.value) / 100))  # int32(): truncation
        result = select(result, proposed)
    return result
