"""The queue model behind the replayed HPA, the predictive floor, and `model` end to end."""

import subprocess
import sys
from pathlib import Path

import yaml

from deploy.autoscale.hpa import parse_autoscaler
from deploy.autoscale.model import (
    QueueModel,
    compare,
    format_summaries,
    read_arrivals,
    run_policy,
    seasonal_floor,
    summarise,
)

REPOSITORY = Path(__file__).resolve().parents[2]
ORDERS_HPA = REPOSITORY / "deploy/k8s/components/autoscaling/hpa-worker-orders.yaml"
SHIPPED_TRACE = REPOSITORY / "deploy/autoscale/traces/daily-cycle-with-spike.csv"
DOCUMENTED_TABLE = REPOSITORY / "docs/autoscaling/reactive-vs-predictive.md"

SMALL_HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: small}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: small}
  minReplicas: 1
  maxReplicas: 4
  metrics:
    - type: External
      external:
        metric: {name: shop_queue_backlog}
        target: {type: AverageValue, averageValue: "100"}
  behavior:
    scaleUp: {stabilizationWindowSeconds: 0, policies: [{type: Pods, value: 4, periodSeconds: 15}]}
    scaleDown: {stabilizationWindowSeconds: 0, policies: [{type: Percent, value: 100, periodSeconds: 15}]}
"""
SMALL_MODEL = QueueModel(service_rate=10, pod_start_seconds=15, drain_objective_seconds=10, metric_lag_seconds=1)


def test_arrivals_hold_each_rate_until_the_next_row(tmp_path):
    trace = tmp_path / "arrivals.csv"
    trace.write_text("seconds,orders_per_second\n0,1.5\n3,4\n5,0\n")

    assert read_arrivals(trace) == [1.5, 1.5, 1.5, 4.0, 4.0, 0.0, 0.0]


def test_a_load_one_pod_carries_leaves_no_backlog_and_no_scaling():
    spec = parse_autoscaler(yaml.safe_load(SMALL_HPA))

    run = run_policy(policy="reactive", spec=spec, arrivals=[5.0] * 120, model=SMALL_MODEL)

    assert set(run.backlog) == {0.0}
    assert set(run.replicas) == {1}
    assert summarise(run, model=SMALL_MODEL).seconds_above_objective == 0


def test_a_burst_is_scaled_for_drained_and_scaled_back_second_by_second():
    spec = parse_autoscaler(yaml.safe_load(SMALL_HPA))
    arrivals = [30.0] * 30 + [0.0] * 45

    run = run_policy(policy="reactive", spec=spec, arrivals=arrivals, model=SMALL_MODEL)
    summary = summarise(run, model=SMALL_MODEL)

    # Worked by hand: 20 more messages a second on 1 pod; at 15 s the backlog of 300 asks for 3 pods (ready at 30 s);
    # at 30 s 600 asks for 6, the Pods policy and maxReplicas allow 4; from 30 s 3 ready pods drain 30 a second;
    # at 45 s 150 left asks for 2 (the newest pod, still starting, goes); empty at 52 s; back to 1 pod at 60 s.
    assert run.replicas == [1] * 15 + [3] * 15 + [4] * 15 + [2] * 15 + [1] * 15
    assert run.backlog[14] == 300
    assert run.backlog[29] == 600
    assert run.backlog[44] == 150
    assert run.backlog[51:53] == [10, 0]
    assert summary.peak_backlog == 600
    # Above 10 s of work: backlog > 100 per ready pod: seconds 5-14, 15-29 (one pod ready) and 30-38 (three).
    assert summary.seconds_above_objective == 10 + 15 + 9
    assert summary.pod_minutes == 165 / 60


def test_the_seasonal_floor_reads_the_busiest_second_of_the_coming_span_one_season_earlier():
    arrivals = [0.0] * 1000
    arrivals[400] = 50.0
    model = QueueModel(service_rate=10, pod_start_seconds=5, drain_objective_seconds=10, season_seconds=500)

    floor = seasonal_floor(arrivals=arrivals, model=model, lead_seconds=10, half_window_seconds=5)

    # The span [now - 505, now - 485] one season back holds second 400 from now 885 to 905: 50 orders/s at 80 % of
    # 10 per pod is ceil(6.25) = 7 pods.
    assert [floor(100), floor(880), floor(885), floor(905), floor(906)] == [None, 0, 7, 7, 0]


def test_the_predictive_floor_beats_the_reactive_hpa_on_a_repeated_day():
    spec = parse_autoscaler(yaml.safe_load(SMALL_HPA))
    day = [5.0] * 200 + [35.0] * 100 + [5.0] * 100
    model = QueueModel(
        service_rate=10,
        pod_start_seconds=15,
        drain_objective_seconds=10,
        metric_lag_seconds=15,
        season_seconds=400,
        forecast_half_window_seconds=20,
    )

    runs, summaries = compare(spec=spec, arrivals=day * 2, model=model)
    reactive, predictive = summaries

    # The floor has the 4 pods ready when the wave comes back on the second day; the reactive HPA waits for a
    # backlog, and pays for it in waiting, the floor in pods started early.
    assert (reactive.policy, predictive.policy) == ("reactive HPA", "predictive floor + HPA")
    assert (reactive.peak_backlog, reactive.seconds_above_objective, reactive.pod_minutes) == (1125, 108, 730 / 60)
    assert (predictive.peak_backlog, predictive.seconds_above_objective, predictive.pod_minutes) == (0, 0, 895 / 60)
    assert runs[1].replicas[400 + 200 - 1] == 4  # ready at the wave's first second


def test_the_documented_comparison_is_what_the_model_computes_on_the_shipped_trace():
    spec = parse_autoscaler(yaml.safe_load(ORDERS_HPA.read_text()))
    model = QueueModel(service_rate=60, pod_start_seconds=45, drain_objective_seconds=30)

    _, summaries = compare(spec=spec, arrivals=read_arrivals(SHIPPED_TRACE), model=model)

    assert format_summaries(summaries, model=model) + "\n" == DOCUMENTED_TABLE.read_text()
    assert len(read_arrivals(SHIPPED_TRACE)) == 2 * 86_400


def test_model_command_prints_the_table_and_writes_the_chart_and_series(tmp_path):
    arrivals = tmp_path / "arrivals.csv"
    arrivals.write_text(
        "seconds,orders_per_second\n0,5\n200,35\n300,5\n400,5\n600,35\n700,5\n"
    )  # the last row lasts 100 s, as the one before
    hpa = tmp_path / "hpa.yaml"
    hpa.write_text(SMALL_HPA)
    chart, series = tmp_path / "chart.png", tmp_path / "series.csv"

    result = subprocess.run(
        [
            sys.executable, "-m", "deploy.autoscale", "model", "--hpa", str(hpa), "--arrivals", str(arrivals),
            "--service-rate", "10", "--pod-start", "15", "--drain-objective", "10", "--season", "400",
            "--chart", str(chart), "--zoom", "0.05", "0.1", "--series", str(series),
        ],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == (
        "| policy | peak backlog | seconds above the 10 s drain objective | pod-minutes |"
    )
    assert [line.split(" | ")[0] for line in result.stdout.splitlines()[2:]] == [
        "| reactive HPA",
        "| predictive floor + HPA",
    ]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = series.read_text().splitlines()
    assert lines[0] == (
        "seconds,orders_per_second,reactive HPA: backlog,reactive HPA: replicas,reactive HPA: ready,"
        "predictive floor + HPA: backlog,predictive floor + HPA: replicas,predictive floor + HPA: ready"
    )
    assert len(lines) == 1 + 800
