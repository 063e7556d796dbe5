"""`model`: a queue behind the replayed HPA, so backlog responds to replicas; reactive against predictive.

Each second: orders arrive at the trace's rate, every ready pod serves `service_rate` orders, the rest waits. Every
15 s the controller of `controller.py` syncs on the backlog Prometheus saw `metric_lag` seconds ago; new pods serve
after `pod_start` seconds, pods taken away stop at once (newest first, as a ReplicaSet removes not-ready pods
first). The predictive policy is the same HPA with a floor patched into `minReplicas` before each sync, from the
arrivals one season (a day) earlier, `lead` seconds ahead: what a predictive operator or a KEDA cron trigger does,
the reactive HPA still on top for what history does not know (a spike).
"""

import argparse
import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from deploy.autoscale.controller import HorizontalController
from deploy.autoscale.hpa import AutoscalerSpec, load_autoscaler

SYNC_PERIOD_SECONDS = 15  # --horizontal-pod-autoscaler-sync-period's default
DAY_SECONDS = 86_400
# The predictive floor plans pods for this share of their measured rate, so a forecast a little low still drains.
PLANNED_UTILISATION = 0.8
# Yesterday's arrivals are read 5 minutes wider on each side: the daily curve shifts by minutes from day to day.
FORECAST_HALF_WINDOW_SECONDS = 300


@dataclass(frozen=True)
class QueueModel:
    """The pool as the model sees it; every number is a flag of `model` with its reason in docs/autoscaling.md."""

    service_rate: float  # orders a ready pod completes per second
    pod_start_seconds: int  # from the HPA's decision to a pod taking messages
    drain_objective_seconds: float  # the backlog a pod may hold, in seconds of its work
    metric_lag_seconds: int = SYNC_PERIOD_SECONDS  # scrape and rule evaluation before the HPA sees a backlog
    season_seconds: int = DAY_SECONDS
    forecast_half_window_seconds: int = FORECAST_HALF_WINDOW_SECONDS


@dataclass(frozen=True)
class Run:
    """One policy's second-by-second outcome."""

    policy: str
    backlog: list[float]
    replicas: list[int]  # pods that exist (cost), ready or starting
    ready: list[int]


@dataclass(frozen=True)
class Summary:
    policy: str
    peak_backlog: float
    seconds_above_objective: int
    pod_minutes: float


def read_arrivals(path: Path) -> list[float]:
    """A `seconds,orders_per_second` CSV as one rate per second (each row holds until the next)."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header != ["seconds", "orders_per_second"]:
            raise ValueError(f"{path}: the header must be 'seconds,orders_per_second', not {header!r}")
        rows = [(int(seconds), float(rate)) for seconds, rate in reader]
    arrivals: list[float] = []
    for index, (start, rate) in enumerate(rows):
        end = rows[index + 1][0] if index + 1 < len(rows) else start + (start - rows[index - 1][0] if index else 1)
        arrivals.extend([rate] * (end - start))
    return arrivals


def seasonal_floor(
    *,
    arrivals: Sequence[float],
    model: QueueModel,
    lead_seconds: int,
    half_window_seconds: int = FORECAST_HALF_WINDOW_SECONDS,
) -> Callable[[int], int | None]:
    """Pods needed from now to `lead` ahead, by the busiest second of that span (widened by the half window) one
    season earlier; None while there is no such history."""

    def floor(now: int) -> int | None:
        first = now - model.season_seconds - half_window_seconds
        last = now + lead_seconds - model.season_seconds + half_window_seconds
        if first < 0:
            return None
        window = arrivals[first : last + 1]
        if not window:
            return None
        return math.ceil(max(window) / (model.service_rate * PLANNED_UTILISATION))

    return floor


def run_policy(
    *,
    policy: str,
    spec: AutoscalerSpec,
    arrivals: Sequence[float],
    model: QueueModel,
    floor: Callable[[int], int | None] | None = None,
) -> Run:
    """Run the queue and the controller over `arrivals`, starting warm at minReplicas with an empty queue."""
    controller = HorizontalController()
    ready_at = [0] * spec.min_replicas  # one entry per pod: the second it starts serving
    backlog = 0.0
    backlogs: list[float] = []
    replicas: list[int] = []
    ready_counts: list[int] = []
    for now, rate in enumerate(arrivals):
        if now % SYNC_PERIOD_SECONDS == 0:
            # The backlog at the end of second `now - lag` (at least the second before: a scrape is never instant).
            seen_at = now - max(model.metric_lag_seconds, 1)
            seen = backlogs[seen_at] if seen_at >= 0 else 0.0
            synced_spec = spec
            if floor is not None:
                planned = floor(now)
                if planned is not None:
                    synced_spec = spec.with_min_replicas(min(max(spec.min_replicas, planned), spec.max_replicas))
            desired = controller.sync(
                spec=synced_spec,
                now=Decimal(now),
                current_replicas=len(ready_at),
                metric_total_milli=round(seen) * 1000,
            ).replicas
            if desired > len(ready_at):
                ready_at.extend([now + model.pod_start_seconds] * (desired - len(ready_at)))
            else:
                del ready_at[desired:]  # the newest pods go first: they are the ones still starting
        ready = sum(1 for start in ready_at if start <= now)
        backlog += rate
        backlog -= min(backlog, ready * model.service_rate)
        backlogs.append(backlog)
        replicas.append(len(ready_at))
        ready_counts.append(ready)
    return Run(policy=policy, backlog=backlogs, replicas=replicas, ready=ready_counts)


def summarise(run: Run, *, model: QueueModel, start: int = 0) -> Summary:
    """Peak backlog, seconds whose backlog would take the ready pods longer than the objective, and pod-minutes."""
    above = 0
    for backlog, ready in zip(run.backlog[start:], run.ready[start:], strict=True):
        capacity = ready * model.service_rate
        if backlog > 0 and (capacity == 0 or backlog / capacity > model.drain_objective_seconds):
            above += 1
    return Summary(
        policy=run.policy,
        peak_backlog=max(run.backlog[start:], default=0.0),
        seconds_above_objective=above,
        pod_minutes=sum(run.replicas[start:]) / 60,
    )


def compare(*, spec: AutoscalerSpec, arrivals: Sequence[float], model: QueueModel) -> tuple[list[Run], list[Summary]]:
    """The reactive HPA and the predictive floor over the same arrivals, measured after the first season."""
    lead = model.pod_start_seconds + SYNC_PERIOD_SECONDS
    runs = [
        run_policy(policy="reactive HPA", spec=spec, arrivals=arrivals, model=model),
        run_policy(
            policy="predictive floor + HPA",
            spec=spec,
            arrivals=arrivals,
            model=model,
            floor=seasonal_floor(
                arrivals=arrivals,
                model=model,
                lead_seconds=lead,
                half_window_seconds=model.forecast_half_window_seconds,
            ),
        ),
    ]
    start = model.season_seconds if len(arrivals) > model.season_seconds else 0
    return runs, [summarise(run, model=model, start=start) for run in runs]


def format_summaries(summaries: Sequence[Summary], *, model: QueueModel) -> str:
    """The comparison as a Markdown table."""
    objective = f"seconds above the {model.drain_objective_seconds:g} s drain objective"
    lines = [
        f"| policy | peak backlog | {objective} | pod-minutes |",
        "| --- | --- | --- | --- |",
    ]
    for summary in summaries:
        lines.append(
            f"| {summary.policy} | {summary.peak_backlog:,.0f} | {summary.seconds_above_objective:,} "
            f"| {summary.pod_minutes:,.0f} |"
        )
    return "\n".join(lines)


def write_series(runs: Sequence[Run], arrivals: Sequence[float], path: Path) -> None:
    """Every second of every policy: arrivals, backlog, pods, ready pods."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            [
                "seconds",
                "orders_per_second",
                *[f"{run.policy}: {what}" for run in runs for what in ("backlog", "replicas", "ready")],
            ]
        )
        for second, rate in enumerate(arrivals):
            cells = [
                cell for run in runs for cell in (f"{run.backlog[second]:.0f}", run.replicas[second], run.ready[second])
            ]
            writer.writerow([second, f"{rate:g}", *cells])


def draw_chart(
    runs: Sequence[Run], arrivals: Sequence[float], *, model: QueueModel, path: Path, zoom: tuple[int, int] | None
) -> None:
    """Arrivals, backlog and replicas over the measured season; a second column zooms on `zoom` (seconds)."""
    import matplotlib  # only `model` draws: `simulate` stays free of matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = model.season_seconds if len(arrivals) > model.season_seconds else 0
    columns = [(start, len(arrivals))] + ([zoom] if zoom else [])
    figure, axes = plt.subplots(3, len(columns), figsize=(7 * len(columns), 8), sharex="col", squeeze=False)
    for column, (first, last) in enumerate(columns):
        hours = [(second - start) / 3600 for second in range(first, last)]
        axes[0][column].plot(hours, arrivals[first:last], color="black", linewidth=0.8)
        for run, colour in zip(runs, ("tab:red", "tab:blue"), strict=False):
            axes[1][column].plot(hours, run.backlog[first:last], color=colour, linewidth=0.9, label=run.policy)
            axes[2][column].step(hours, run.replicas[first:last], color=colour, linewidth=0.9, where="post")
        axes[0][column].set_ylabel("orders/s arriving")
        axes[1][column].set_ylabel("backlog (messages)")
        axes[2][column].set_ylabel("pods")
        axes[2][column].set_xlabel("hour of the measured day")
        axes[0][column].set_title("the measured day" if column == 0 else "zoom on the spike")
    axes[1][0].legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def add_model_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "model",
        help="a queue behind the HPA: reactive HPA against a predictive floor on the same arrivals",
        description="Second-by-second queue model driven by the replayed controller; prints the comparison "
        "(peak backlog, seconds above the drain objective, pod-minutes) over the trace's last season.",
    )
    parser.add_argument("--hpa", type=Path, required=True, help="the pool's HorizontalPodAutoscaler manifest")
    parser.add_argument("--arrivals", type=Path, required=True, help="CSV with header seconds,orders_per_second")
    parser.add_argument("--service-rate", type=float, default=60.0, help="orders/s one ready pod completes (60)")
    parser.add_argument("--pod-start", type=int, default=45, help="seconds from scale-up to serving (45)")
    parser.add_argument("--drain-objective", type=float, default=30.0, help="seconds of backlog accepted (30)")
    parser.add_argument("--metric-lag", type=int, default=SYNC_PERIOD_SECONDS, help="seconds (15)")
    parser.add_argument("--season", type=int, default=DAY_SECONDS, help="seconds between a time and 'yesterday'")
    parser.add_argument("--chart", type=Path, help="write a PNG of arrivals, backlog and replicas")
    parser.add_argument("--zoom", type=float, nargs=2, metavar=("FROM_HOUR", "TO_HOUR"), help="zoomed column")
    parser.add_argument("--series", type=Path, help="write every second of both policies as CSV")
    parser.set_defaults(run=run_model_command)


def run_model_command(arguments: argparse.Namespace) -> int:
    spec = load_autoscaler(arguments.hpa)
    arrivals = read_arrivals(arguments.arrivals)
    model = QueueModel(
        service_rate=arguments.service_rate,
        pod_start_seconds=arguments.pod_start,
        drain_objective_seconds=arguments.drain_objective,
        metric_lag_seconds=arguments.metric_lag,
        season_seconds=arguments.season,
    )
    runs, summaries = compare(spec=spec, arrivals=arrivals, model=model)
    print(format_summaries(summaries, model=model))
    if arguments.series:
        write_series(runs, arrivals, arguments.series)
    if arguments.chart:
        start = model.season_seconds if len(arrivals) > model.season_seconds else 0
        zoom = None
        if arguments.zoom:
            zoom = (start + int(arguments.zoom[0] * 3600), start + int(arguments.zoom[1] * 3600))
        draw_chart(runs, arrivals, model=model, path=arguments.chart, zoom=zoom)
    return 0
