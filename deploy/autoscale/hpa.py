"""An `autoscaling/v2` HorizontalPodAutoscaler manifest as the controller sees it, after the API server's defaulting.

Defaults come from `pkg/apis/autoscaling/v2/defaults.go`: minReplicas 1; when `behavior` is present, each direction
it leaves out (or each field of it) gets scale-up {window 0 s, Max of 4 Pods and 100 Percent per 15 s} and
scale-down {window unset, 100 Percent per 15 s}. An unset scale-down window is filled by the controller from its flag
`--horizontal-pod-autoscaler-downscale-stabilization` (5 minutes). An HPA without `behavior` keeps none: the
controller then takes its older path (`normalizeDesiredReplicas`), which `controller.py` replays too.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from deploy.autoscale.quantity import parse_quantity, to_milli

POLICY_TYPES = ("Pods", "Percent")
SELECT_POLICIES = ("Max", "Min", "Disabled")
# defaults.go: scaleUpLimitPercent, scaleUpLimitMinimumPods, scaleUpPeriod; scaleDownLimitPercent, scaleDownPeriod.
DEFAULT_SCALE_UP_POLICIES = (("Pods", 4, 15), ("Percent", 100, 15))
DEFAULT_SCALE_UP_WINDOW_SECONDS = 0
DEFAULT_SCALE_DOWN_POLICIES = (("Percent", 100, 15),)
DEFAULT_MIN_REPLICAS = 1


class InvalidAutoscaler(ValueError):
    """Raised for a manifest the replay cannot stand for: not an HPA, or a metric it does not model."""


@dataclass(frozen=True)
class ScalingPolicy:
    type: str
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """One direction of `behavior`, every field filled (the scale-down window may wait for the controller's flag)."""

    stabilization_window_seconds: int | None
    select_policy: str
    policies: tuple[ScalingPolicy, ...]
    tolerance: float | None = None

    @property
    def longest_policy_period(self) -> int:
        return max((policy.period_seconds for policy in self.policies), default=0)


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules
    scale_down: ScalingRules


@dataclass(frozen=True)
class ExternalMetric:
    """The one `External` metric with an `AverageValue` target that the replay models."""

    name: str
    selector: dict[str, Any]
    target_average_milli: int


@dataclass(frozen=True)
class AutoscalerSpec:
    name: str
    namespace: str | None
    target_name: str
    min_replicas: int
    max_replicas: int
    metric: ExternalMetric
    behavior: Behavior | None

    def with_min_replicas(self, min_replicas: int) -> "AutoscalerSpec":
        """The same HPA with another floor: what a predictive operator patching `minReplicas` produces."""
        return replace(self, min_replicas=min_replicas)


def load_autoscaler(path: Path) -> AutoscalerSpec:
    """The single HorizontalPodAutoscaler in the YAML file at `path`."""
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document]
    autoscalers = [document for document in documents if document.get("kind") == "HorizontalPodAutoscaler"]
    if len(autoscalers) != 1:
        raise InvalidAutoscaler(f"{path} holds {len(autoscalers)} HorizontalPodAutoscaler objects, expected 1")
    return parse_autoscaler(autoscalers[0])


def parse_autoscaler(manifest: dict[str, Any]) -> AutoscalerSpec:
    """Apply the API server's defaults to `manifest` and keep what the controller's arithmetic reads."""
    if manifest.get("apiVersion") != "autoscaling/v2":
        raise InvalidAutoscaler(f"apiVersion {manifest.get('apiVersion')!r}: only autoscaling/v2 is replayed")
    metadata = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    min_replicas = int(spec.get("minReplicas", DEFAULT_MIN_REPLICAS))
    max_replicas = int(spec["maxReplicas"])
    if not 0 <= min_replicas <= max_replicas:
        raise InvalidAutoscaler(f"minReplicas {min_replicas} and maxReplicas {max_replicas} are not 0 <= min <= max")
    behavior = spec.get("behavior")
    return AutoscalerSpec(
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace"),
        target_name=(spec.get("scaleTargetRef") or {}).get("name", ""),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        metric=_parse_metric(spec.get("metrics") or []),
        behavior=None if behavior is None else _parse_behavior(behavior),
    )


def _parse_metric(metrics: list[dict[str, Any]]) -> ExternalMetric:
    if len(metrics) != 1:
        raise InvalidAutoscaler(f"{len(metrics)} metrics: the replay models exactly one External metric")
    metric = metrics[0]
    if metric.get("type") != "External":
        raise InvalidAutoscaler(f"metric type {metric.get('type')!r}: the replay models External metrics only")
    external = metric["external"]
    target = external["target"]
    if target.get("type") != "AverageValue" or "averageValue" not in target:
        raise InvalidAutoscaler("the External metric's target must be of type AverageValue with an averageValue")
    target_milli = to_milli(target["averageValue"])
    if target_milli <= 0:
        raise InvalidAutoscaler(f"averageValue {target['averageValue']!r} must be positive")
    return ExternalMetric(
        name=external["metric"]["name"],
        selector=external["metric"].get("selector") or {},
        target_average_milli=target_milli,
    )


def _parse_behavior(behavior: dict[str, Any]) -> Behavior:
    return Behavior(
        scale_up=_parse_rules(
            behavior.get("scaleUp"),
            default_window=DEFAULT_SCALE_UP_WINDOW_SECONDS,
            default_policies=DEFAULT_SCALE_UP_POLICIES,
        ),
        scale_down=_parse_rules(
            behavior.get("scaleDown"), default_window=None, default_policies=DEFAULT_SCALE_DOWN_POLICIES
        ),
    )


def _parse_rules(
    rules: dict[str, Any] | None, *, default_window: int | None, default_policies: tuple[tuple[str, int, int], ...]
) -> ScalingRules:
    """`copyHPAScalingRules`: every field the manifest sets wins over its default, field by field."""
    rules = rules or {}
    raw_policies = rules.get("policies")
    if raw_policies is None:
        policies = tuple(ScalingPolicy(*policy) for policy in default_policies)
    else:
        policies = tuple(
            ScalingPolicy(type=policy["type"], value=int(policy["value"]), period_seconds=int(policy["periodSeconds"]))
            for policy in raw_policies
        )
    if not policies:
        raise InvalidAutoscaler("a scaling rule with an empty policies list is rejected by the API server")
    for policy in policies:
        if policy.type not in POLICY_TYPES or policy.value <= 0 or not 0 < policy.period_seconds <= 1800:
            raise InvalidAutoscaler(f"invalid scaling policy {policy}")
    select_policy = rules.get("selectPolicy", "Max")
    if select_policy not in SELECT_POLICIES:
        raise InvalidAutoscaler(f"selectPolicy {select_policy!r} is not one of {SELECT_POLICIES}")
    window = rules.get("stabilizationWindowSeconds", default_window)
    if window is not None and not 0 <= int(window) <= 3600:
        raise InvalidAutoscaler(f"stabilizationWindowSeconds {window} is outside 0..3600")
    tolerance = rules.get("tolerance")
    return ScalingRules(
        stabilization_window_seconds=None if window is None else int(window),
        select_policy=select_policy,
        policies=policies,
        tolerance=None if tolerance is None else float(parse_quantity(tolerance)),
    )
