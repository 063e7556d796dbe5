"""The autoscaling component: strict Kubernetes validation, the ScaledObject schema, and what an operator relies on."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.conf import settings

from deploy.autoscale.quantity import parse_quantity
from jobs.routing import PUBLIC_FALLBACK, queue_names, region_queue

REPOSITORY = Path(__file__).resolve().parents[2]
COMPONENT = REPOSITORY / "deploy/k8s/components/autoscaling"
SCHEMA = json.loads((REPOSITORY / "deploy/k8s/schemas/scaledobject.schema.json").read_text())
# The Kubernetes release the manifests are validated against (kubernetes-validate's bundled schemas).
KUBERNETES_VERSION = "1.34.0"
POOLS = ("worker-orders", "worker-io", "worker-maintenance", "worker-heavy")
# Queues a pool already consumes that the router does not route to yet: none since the router sends thumbnails to
# `heavy` (issue 15).
PLANNED_QUEUES: set[str] = set()


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def autoscalers() -> dict[str, dict]:
    return {load(path)["metadata"]["name"]: load(path) for path in sorted(COMPONENT.glob("hpa-*.yaml"))}


def scaled_objects() -> dict[str, dict]:
    return {
        load(path)["metadata"]["name"]: load(path) for path in sorted((COMPONENT / "keda").glob("scaledobject-*.yaml"))
    }


def selected_queues(selector: dict) -> set[str]:
    if "matchLabels" in selector:
        return {selector["matchLabels"]["queue_name"]}
    (expression,) = selector["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("queue_name", "In")
    return set(expression["values"])


def queried_queues(query: str) -> set[str]:
    match = re.search(r'queue_name=~?"([^"]+)"', query)
    assert match, query
    # A regex of alternatives, each a queue name with its dots escaped (`\\.` in the PromQL string).
    return {name.replace("\\\\.", ".") for name in match.group(1).split("|")}


@pytest.mark.parametrize("name", POOLS)
def test_each_hpa_passes_strict_validation(name):
    manifest = autoscalers()[name]

    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field():
    manifest = copy.deepcopy(autoscalers()["worker-orders"])
    manifest["spec"]["behavior"]["scaleUp"]["stabilisationWindowSeconds"] = 0

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", POOLS)
def test_each_scaled_object_matches_the_schema(name):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)

    jsonschema.Draft202012Validator(SCHEMA).validate(scaled_objects()[name])


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "fallback", "replica"), 1),  # misspelt
        (("spec", "triggers", 0, "metadata", "activationTreshold"), "0"),  # misspelt
        (("spec", "triggers", 0, "metadata", "threshold"), 1800),  # KEDA's metadata values are strings
    ],
)
def test_the_schema_rejects_what_keda_would_prune_or_refuse(path, value):
    manifest = copy.deepcopy(scaled_objects()["worker-orders"])
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(manifest)


def test_every_pool_has_one_hpa_and_one_scaled_object_and_every_queue_a_pool():
    hpas, keda = autoscalers(), scaled_objects()
    queues_by_pool = {
        name: selected_queues(hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]) for name, hpa in hpas.items()
    }

    assert sorted(hpas) == sorted(POOLS)
    assert sorted(keda) == sorted(POOLS)
    named = set().union(*queues_by_pool.values())
    assert named <= set(queue_names()) | PLANNED_QUEUES
    assert set(queue_names()) <= named
    assert sum(len(queues) for queues in queues_by_pool.values()) == len(named)  # no queue scales two pools
    # Notifications carry personal data and go with their orders, by region; analytics and exports do not.
    assert queues_by_pool["worker-io"] == {"analytics"}
    assert queues_by_pool["worker-orders"] == {*map(region_queue, settings.ORDER_REGIONS), PUBLIC_FALLBACK}


def test_a_region_falls_back_to_the_public_pool_at_one_orders_pod_s_target():
    target = autoscalers()["worker-orders"]["spec"]["metrics"][0]["external"]["target"]["averageValue"]

    assert parse_quantity(target) == settings.PUBLIC_FALLBACK_BACKLOG


@pytest.mark.parametrize("name", POOLS)
def test_each_hpa_is_bounded_explicit_and_reads_the_adapter_metric(name):
    hpa = autoscalers()[name]
    spec = hpa["spec"]
    (metric,) = spec["metrics"]
    adapter = load(COMPONENT / "prometheus-adapter/config.yaml")["externalRules"][0]

    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert hpa["metadata"]["labels"] == {"app.kubernetes.io/name": "shop", "app.kubernetes.io/component": name}
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == adapter["name"]["as"]
    assert metric["external"]["target"]["type"] == "AverageValue"
    for direction in ("scaleUp", "scaleDown"):
        rules = spec["behavior"][direction]
        assert set(rules) == {"stabilizationWindowSeconds", "selectPolicy", "policies"}, direction
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0  # fast up
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300  # stabilised down


@pytest.mark.parametrize("name", POOLS)
def test_each_target_is_the_number_its_derivation_arrives_at(name):
    path = COMPONENT / f"hpa-{name}.yaml"
    target = autoscalers()[name]["spec"]["metrics"][0]["external"]["target"]["averageValue"]

    derivation = re.search(
        r"#   target +.*?= ([0-9.,]+)(?:, rounded down to ([0-9]+))? messages per pod", path.read_text()
    )

    assert derivation, f"{path.name} has no derivation comment for its target"
    assert (derivation.group(2) or derivation.group(1)).replace(",", "") == target


@pytest.mark.parametrize("name", POOLS)
def test_each_scaled_object_mirrors_its_hpa(name):
    hpa, scaled = autoscalers()[name]["spec"], scaled_objects()[name]["spec"]
    (trigger,) = scaled["triggers"]

    assert scaled["scaleTargetRef"] == hpa["scaleTargetRef"]
    assert scaled["maxReplicaCount"] == hpa["maxReplicas"]
    assert scaled["minReplicaCount"] == (0 if name == "worker-heavy" else hpa["minReplicas"])
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    assert parse_quantity(trigger["metadata"]["threshold"]) == parse_quantity(
        hpa["metrics"][0]["external"]["target"]["averageValue"]
    )
    assert queried_queues(trigger["metadata"]["query"]) == selected_queues(
        hpa["metrics"][0]["external"]["metric"]["selector"]
    )
    assert trigger["metadata"]["activationThreshold"] == "0"
    assert trigger["metadata"]["ignoreNullValues"] == "false"
    assert 1 <= scaled["fallback"]["replicas"] <= scaled["maxReplicaCount"]


def test_each_component_lists_exactly_its_files():
    for directory, pattern in ((COMPONENT, "hpa-*.yaml"), (COMPONENT / "keda", "scaledobject-*.yaml")):
        kustomization = load(directory / "kustomization.yaml")

        assert kustomization["kind"] == "Component"
        assert sorted(kustomization["resources"]) == sorted(path.name for path in directory.glob(pattern))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for kustomize) is not installed")
@pytest.mark.parametrize(
    ("component", "kind"), [("autoscaling", "HorizontalPodAutoscaler"), ("autoscaling/keda", "ScaledObject")]
)
def test_kustomize_builds_each_component_onto_a_base(tmp_path, component, kind):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copytree(COMPONENT, tmp_path / "autoscaling")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": "shop", "components": [f"../{component}"]})
    )

    result = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    built = [document for document in yaml.safe_load_all(result.stdout) if document]
    assert sorted(
        (document["kind"], document["metadata"]["name"], document["metadata"]["namespace"]) for document in built
    ) == sorted((kind, name, "shop") for name in POOLS)
