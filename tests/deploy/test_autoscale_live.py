"""`python -m deploy.autoscale live`: its pure parts, and a short live run asserted from its report.

The short run keeps everything real (Prometheus, the adapter's query, the manifest's workers, SIGTERM on
scale-down, orders over HTTP) and shortens the intervals and the scale-down window so it ends within about two
minutes; the documented run (docs/autoscaling.md, "A live run") keeps the shipped ones.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench import environment as env
from deploy import manifests
from deploy.autoscale import live
from deploy.autoscale.hpa import load_autoscaler
from deploy.autoscale.pods import Cluster, ManifestPods, Pod, scale_down_victims

ORDERS_QUERY = (
    'max by (queue_name) (shop:queue_backlog:max{namespace="shop",'
    'queue_name=~"cloud.eu|cloud.us|cloud.ap|public_fallback"})'
)
# The short run: the orders pool's shipped HPA with a small target and window, intervals of seconds.
SHORT_RUN_MAX_REPLICAS = 6
SHORT_RUN = (
    f"--phases 20:2,40:8,20:2 --target 10 --min-replicas 2 --max-replicas {SHORT_RUN_MAX_REPLICAS} "
    "--scale-down-window 20 --sync-seconds 5 --scrape-seconds 2 --rule-seconds 2 --payment-latency-ms 1000 "
    "--tail-seconds 120 --settle-seconds 120 --database shop_live_test"
).split()


def adapter_config() -> dict:
    return yaml.safe_load(live.ADAPTER_CONFIG.read_text())


def test_the_query_is_the_adapters_for_the_orders_hpa_and_the_one_the_rule_tests_check():
    spec = load_autoscaler(live.HPA)

    assert live.adapter_query(spec, adapter_config()) == ORDERS_QUERY


def test_a_match_labels_selector_becomes_an_equality_in_the_adapters_query():
    spec = load_autoscaler(live.AUTOSCALING / "hpa-worker-io.yaml")

    assert live.adapter_query(spec, adapter_config()) == (
        'max by (queue_name) (shop:queue_backlog:max{namespace="shop",queue_name="analytics"})'
    )


def test_a_selector_operator_the_run_does_not_model_is_refused():
    with pytest.raises(ValueError, match="NotIn"):
        live.label_matchers(
            namespace="shop", selector={"matchExpressions": [{"key": "q", "operator": "NotIn", "values": ["a"]}]}
        )


def test_the_metric_total_is_the_sum_of_every_series_in_milli_units_and_none_without_series():
    series = [
        {"metric": {"queue_name": "cloud.eu"}, "value": [1, "12"]},
        {"metric": {"queue_name": "cloud.us"}, "value": [1, "0.5"]},
    ]

    assert live.metric_total_milli({"status": "success", "data": {"resultType": "vector", "result": series}}) == 12500
    assert live.metric_total_milli({"status": "success", "data": {"resultType": "vector", "result": []}}) is None
    with pytest.raises(live.LiveRunError):
        live.metric_total_milli({"status": "error", "error": "parse error"})


def pod(name: str, *, started_at: float, ready_at: float | None) -> Pod:
    return Pod(
        name=name,
        hostname=name,
        process=None,
        probe_directory=Path("/nonexistent"),
        started_at=started_at,
        ready_at=ready_at,
    )


def test_a_scale_down_removes_pods_not_ready_first_then_the_most_recently_ready():
    pods = [
        pod("old", started_at=0, ready_at=5),
        pod("newest-ready", started_at=10, ready_at=30),
        pod("starting", started_at=40, ready_at=None),
        pod("middle", started_at=20, ready_at=25),
    ]

    assert [victim.name for victim in scale_down_victims(pods, 3)] == ["starting", "newest-ready", "middle"]


def test_the_step_up_and_the_step_down_are_found_in_the_phases():
    assert live.step_up_and_down(live.parse_phases("20:2,40:8,20:2,10:0")) == (20.0, 60.0)
    assert live.step_up_and_down(live.parse_phases("30:5")) == (None, None)


def live_arguments(argv: list[str]) -> argparse.Namespace:
    """The parsed `live` arguments (every interval given, so none is left for the command to fill in)."""
    parser = argparse.ArgumentParser()
    live.add_live_command(parser.add_subparsers())
    arguments = parser.parse_args(["live", *argv])
    arguments.phases = tuple(arguments.phases)
    return arguments


def test_only_the_scale_down_window_of_the_behavior_changes_and_every_difference_is_reported():
    arguments = live_arguments(SHORT_RUN)
    settings = live.Settings(**{name: getattr(arguments, name) for name in live.Settings.__dataclass_fields__})
    shipped = load_autoscaler(live.HPA)

    spec = live.autoscaler(settings)

    assert spec.behavior is not None
    assert shipped.behavior is not None
    assert spec.behavior.scale_up == shipped.behavior.scale_up
    assert spec.behavior.scale_down.policies == shipped.behavior.scale_down.policies
    assert spec.behavior.scale_down.stabilization_window_seconds == 20
    assert {item["setting"]: (item["shipped"], item["here"]) for item in live.differences(settings, spec)} == {
        "averageValue (messages per pod)": ("1800", "10"),
        "maxReplicas": ("20", "6"),
        "scaleDown.stabilizationWindowSeconds": ("300", "20"),
        "sync period (s)": ("15", "5"),
        "scrape interval (s)": ("30", "2"),
        "rule group interval (s)": ("15", "2"),
        "PAYMENT_SANDBOX_LATENCY_MS": ("0", "1000"),
    }


def test_a_shortened_rule_interval_changes_only_the_autoscaling_groups_interval(tmp_path):
    prometheus = live.Prometheus(processes=None, work_dir=tmp_path, scrape_seconds=2, rule_seconds=2)

    copy = yaml.safe_load(prometheus.rules_file().read_text())

    shipped = yaml.safe_load(live.RULES.read_text())
    shipped["groups"][0]["interval"] = "2s"
    assert shipped["groups"][0]["name"] == live.AUTOSCALING_RULE_GROUP
    assert copy == shipped


class RecordingProcesses:
    """Stands for bench's Processes: records what would be started."""

    def __init__(self) -> None:
        self.started: list[tuple[list[str], dict[str, str]]] = []

    def start(self, command: list[str], *, environment: dict[str, str], name: str):
        self.started.append((command, environment))
        return object()  # nothing is run


def test_a_pod_runs_the_manifests_command_and_environment_with_only_the_clusters_parts_substituted(tmp_path):
    processes = RecordingProcesses()
    cluster = Cluster(
        database_url="postgres://db",
        broker_url="redis://broker",
        sandbox_url="redis://sandbox",
        mail_log=tmp_path / "mail.log",
    )
    pods = ManifestPods(
        container_name="worker-orders",
        processes=processes,
        work_dir=tmp_path,
        cluster=cluster,
        experiment={"PAYMENT_SANDBOX_LATENCY_MS": "1000"},
    )

    first, second = pods.start(), pods.start()

    rendering = manifests.render_overlay("production")
    (container,) = [item for item in manifests.containers(rendering) if item.name == "worker-orders"]
    manifest_environment = manifests.environment(container, rendering, fields={"status.podIP": "127.0.0.1"})
    (command, environment), _second = processes.started
    assert container.command[0] == "celery"
    assert command == [sys.executable, "-m", "celery", *container.command[1:], f"--hostname={first.hostname}"]
    assert first.hostname != second.hostname
    substituted = {
        "DATABASE_URL",
        "REDIS_URL",
        "PAYMENT_SANDBOX_REDIS_URL",
        "SECRET_KEY",
        "WORKER_METRICS_PORT",
        "WORKER_PROBE_DIR",
        "WORKER_METRICS_DIR",
    }
    assert {
        key: value for key, value in environment.items() if key in manifest_environment and key not in substituted
    } == {key: value for key, value in manifest_environment.items() if key not in substituted}
    assert (environment["DATABASE_URL"], environment["REDIS_URL"]) == ("postgres://db", "redis://broker")
    assert environment["WORKER_PROBE_DIR"] == str(tmp_path / "worker-orders-1/volumes/run/worker/probes")
    assert environment["PAYMENT_SANDBOX_LATENCY_MS"] == "1000"


def test_the_experiment_may_not_override_what_the_manifest_sets(tmp_path):
    cluster = Cluster(database_url="", broker_url="", sandbox_url="", mail_log=tmp_path / "mail.log")

    with pytest.raises(ValueError, match="CELERY_TASK_TIME_LIMIT"):
        ManifestPods(
            container_name="worker-orders",
            processes=RecordingProcesses(),
            work_dir=tmp_path,
            cluster=cluster,
            experiment={"CELERY_TASK_TIME_LIMIT": "5"},
        )


@pytest.mark.faults
@pytest.mark.integration
def test_a_short_live_run_scales_up_and_down_on_the_metric_from_prometheus_and_loses_nothing(tmp_path):
    output = tmp_path / "run"
    started = time.monotonic()

    # when
    result = subprocess.run(
        [sys.executable, "-m", "deploy.autoscale", "live", *SHORT_RUN, "--output", str(output)],
        cwd=env.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"short live run: {time.monotonic() - started:.0f} s\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")

    # then
    assert result.returncode == 0
    summary = json.loads(output.with_suffix(".json").read_text())
    with output.with_suffix(".csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["syncs"] > 0
    replicas = [int(row["replicas"]) for row in rows]
    backlogs = [float(row["backlog"]) for row in rows if row["backlog"]]
    assert (summary["scale_ups"] >= 1, summary["scale_downs"] >= 1, summary["pods_sent_sigterm"] >= 1) == (
        True,
        True,
        True,
    )
    assert max(replicas) <= SHORT_RUN_MAX_REPLICAS
    assert max(replicas) > min(replicas) == 2
    # The metric came through Prometheus: a value at every sync, and a backlog that was there to see.
    assert len(backlogs) == summary["syncs_with_metric"] == summary["syncs"]
    assert max(backlogs) > 0
    assert summary["query"] == ORDERS_QUERY
    assert summary["placed"] > 0
    assert (summary["completed"], summary["lost"], summary["duplicated"], summary["lost_effects"]) == (
        summary["placed"],
        0,
        0,
        0,
    )
    assert [pod["exit_status"] for pod in summary["terminated_pods"]] == [0] * summary["pods_sent_sigterm"]
    assert output.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
