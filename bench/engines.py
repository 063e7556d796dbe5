"""The same trivial task through Celery (production settings, and defaults), RQ (forking and simple workers),
Huey and Dramatiq, each against its own fresh redis-server, with the same number of worker processes.

    python -m bench engines [--tasks 20000] [--runs 3] [--processes 2] [--engines celery-production,rq-fork]

Per engine and run, in this order:
  enqueue     one producer process enqueues N tasks, no worker running: tasks/s accepted by the broker
  drain       the workers start on that pre-filled queue: tasks/s from its first to its last completion
  end to end  producer and workers together, N more tasks: tasks/s from the first enqueue to the last completion
  latency     a producer paced at half the end-to-end rate: P50/P95/P99 seconds from enqueue to completion
  recovery    a pre-filled queue (about --recovery-seconds of drain), one task-running process SIGKILLed a quarter
              of the way in: seconds until throughput is back to 80 % of the rate before the kill, tasks never run
              (within --grace-seconds), tasks run twice
Peak RSS is summed over every worker process (main processes, pool children, forked horses) during the drain,
end-to-end and latency phases. The report is the median of the runs, with min and max.
"""

import argparse
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import environment as env
from bench import report
from bench.queues import BROKER_URL_VARIABLE
from bench.recorder import RECORD_PATH_VARIABLE, Completions, phase_indexes
from bench.report import Column

PYTHON = env.PYTHON
ENQUEUE, DRAIN, END_TO_END, LATENCY, RECOVERY = 1, 2, 3, 4, 5

# The latency phase offers half the load the engine sustained end to end: queues are short but never idle, so
# the percentiles measure the engine's per-task path rather than a backlog that grows with --tasks.
LATENCY_LOAD_FRACTION = 0.5
LATENCY_MIN_TASKS = 50
# Throughput "is back" when half a second of completions reaches 80 % of the rate before the kill.
RECOVERED_FRACTION = 0.8
RECOVERY_WINDOW_SECONDS = 0.5
RECOVERY_STEP_SECONDS = 0.05
# The rate before the kill is measured from this long after the first completion (processes warming up).
RECOVERY_WARMUP_SECONDS = 0.5
RECOVERY_MIN_TASKS = 200
# A phase whose tasks have made no progress for this long is over; what has not run by then is lost.
STALL_SECONDS = 30
# Longer than Dramatiq's 60 s heartbeat timeout, the longest redelivery delay met in the recovery phase
# (a killed Celery pool child's task is requeued at once; RQ and Huey do not redeliver by themselves).
DEFAULT_GRACE_SECONDS = 65
POLL_SECONDS = 0.05
# Django-loading workers on a busy 2-core machine can take many seconds to start.
STARTUP_TIMEOUT_SECONDS = 120

POOL_CHILD = "one pool process"
WORKER_PROCESS = "one worker process"


@dataclass(frozen=True)
class Engine:
    name: str
    module: str  # the app the workers load and the producer imports (bench/queues/)
    configuration: str
    kill: str  # which process the recovery phase SIGKILLs
    commands: Callable[[str, int, str], list[list[str]]]  # (module, processes, broker) -> one command per worker
    needs_database: bool = False
    celery_overrides: dict | None = None  # Celery settings changed from proj/settings.py (BENCH_CELERY_OVERRIDES)


def _celery_production(module: str, processes: int, broker: str, *, loglevel: str = "INFO") -> list[list[str]]:
    # The worker command of docker-compose.yml / Procfile, on the queue the task is routed to (the default one).
    return [[PYTHON, "-m", "celery", "-A", module, "worker", "--pool", "prefork", "--concurrency", str(processes),
             "--queues", "maintenance", "--loglevel", loglevel]]  # fmt: skip


def _celery_production_quiet(module: str, processes: int, broker: str) -> list[list[str]]:
    return _celery_production(module, processes, broker, loglevel="WARNING")


def _celery_defaults(module: str, processes: int, broker: str) -> list[list[str]]:
    return [[PYTHON, "-m", "celery", "-A", module, "worker", "--pool", "prefork", "--concurrency", str(processes)]]


def _rq(worker_class: str) -> Callable[[str, int, str], list[list[str]]]:
    def commands(module: str, processes: int, broker: str) -> list[list[str]]:
        # One RQ worker runs one job at a time: N processes are N workers (what `rq worker-pool -n N` starts).
        # No --name: a worker restarted after SIGKILL must not clash with the dead one's name, still registered.
        command = [PYTHON, "-m", "rq.cli", "worker", "--url", broker, "--worker-class", worker_class,
                   "--logging_level", "WARNING", "default"]  # fmt: skip
        return [command] * processes

    return commands


def _huey(module: str, processes: int, broker: str) -> list[list[str]]:
    return [[PYTHON, "-m", "huey.bin.huey_consumer", f"{module}.huey", "--workers", str(processes),
             "--worker-type", "process", "--quiet"]]  # fmt: skip


def _dramatiq(module: str, processes: int, broker: str) -> list[list[str]]:
    return [[PYTHON, "-m", "dramatiq", module, "--processes", str(processes)]]


ENGINES = {
    engine.name: engine
    for engine in (
        Engine(
            "celery-production",
            "bench.queues.celery_production",
            "proj/settings.py: acks late, reject on worker lost, prefetch 1, results in PostgreSQL (extended), "
            "task events on, JSON; prefork, --loglevel INFO as deployed",
            POOL_CHILD,
            _celery_production,
            needs_database=True,
        ),
        # Not run by default: what each costly production setting costs, one change at a time, then all of them.
        Engine(
            "celery-production-no-results",
            "bench.queues.celery_production",
            "as celery-production, but task_ignore_result (no result row in PostgreSQL per task)",
            POOL_CHILD,
            _celery_production,
            needs_database=True,
            celery_overrides={"task_ignore_result": True},
        ),
        Engine(
            "celery-production-no-events",
            "bench.queues.celery_production",
            "as celery-production, but no task events (worker_send_task_events, task_send_sent_event off)",
            POOL_CHILD,
            _celery_production,
            needs_database=True,
            celery_overrides={"worker_send_task_events": False, "task_send_sent_event": False},
        ),
        Engine(
            "celery-production-lean",
            "bench.queues.celery_production",
            "as celery-production, but no result rows, no task events, --loglevel WARNING; acks late kept",
            POOL_CHILD,
            _celery_production_quiet,
            needs_database=True,
            celery_overrides={
                "task_ignore_result": True,
                "worker_send_task_events": False,
                "task_send_sent_event": False,
            },
        ),
        Engine(
            "celery-defaults",
            "bench.queues.celery_defaults",
            "Celery defaults: acks early, prefetch 4 per process, no result backend, no task events; prefork",
            POOL_CHILD,
            _celery_defaults,
        ),
        Engine(
            "rq-fork",
            "bench.queues.rq_jobs",
            "RQ default Worker: forks a work horse per job; one worker process per slot",
            WORKER_PROCESS,
            _rq("rq.worker.Worker"),
        ),
        Engine(
            "rq-simple",
            "bench.queues.rq_jobs",
            "RQ SimpleWorker: runs jobs in the worker process; one worker process per slot",
            WORKER_PROCESS,
            _rq("rq.worker.SimpleWorker"),
        ),
        Engine(
            "huey",
            "bench.queues.huey_app",
            "RedisHuey defaults (blocking dequeue); consumer with process workers, health check every 10 s",
            POOL_CHILD,
            _huey,
        ),
        Engine(
            "dramatiq",
            "bench.queues.dramatiq_app",
            "RedisBroker, default middleware; N processes x 8 threads (the default)",
            POOL_CHILD,
            _dramatiq,
        ),
    )
}

# The table the issue asks for; the celery-production-* rows are asked for by name.
DEFAULT_ENGINES = ("celery-production", "celery-defaults", "rq-fork", "rq-simple", "huey", "dramatiq")

COLUMNS = (
    Column("enqueue_per_s", "enqueue tasks/s"),
    Column("drain_per_s", "drain tasks/s"),
    Column("end_to_end_per_s", "end-to-end tasks/s"),
    Column("latency_p50_ms", "P50 ms", 1),
    Column("latency_p95_ms", "P95 ms", 1),
    Column("latency_p99_ms", "P99 ms", 1),
    Column("peak_rss_mb", "peak RSS MB"),
    Column("recovery_s", "recovery s", 2),
    Column("recovery_lost", "lost after kill"),
    Column("recovery_twice", "run twice after kill"),
    Column("lost", "lost (no kill)"),
    Column("twice", "run twice (no kill)"),
)
# Also in runs.csv: what each phase actually did, to check a result against.
DETAIL_KEYS = ("startup_s", "latency_rate_per_s", "latency_tasks", "recovery_tasks", "recovery_killed",
               "recovery_restarts", "peak_processes", "peak_rss_per_process_mb")  # fmt: skip


@dataclass(frozen=True)
class Settings:
    tasks: int
    processes: int
    latency_seconds: float
    recovery_seconds: float
    grace_seconds: float


class Nodes:
    """The worker processes of one engine (one per command), started, supervised and stopped together."""

    def __init__(self, engine: Engine, processes: env.Processes, environment: dict, worker_processes: int) -> None:
        self.commands = engine.commands(engine.module, worker_processes, environment[BROKER_URL_VARIABLE])
        self.engine, self.processes, self.environment = engine, processes, environment
        self.running: list = []
        self.restarts = 0

    def start(self) -> None:
        self.running = [self._start(index) for index in range(len(self.commands))]

    def _start(self, index: int):
        return self.processes.start(
            self.commands[index], environment=self.environment, name=f"{self.engine.name}-{index}"
        )

    def ids(self) -> list[int]:
        return [process.pid for process in self.running]

    def restart_exited(self) -> None:
        """Do what systemd or Kubernetes would: start again a worker whose main process exited."""
        for index, process in enumerate(self.running):
            if process.poll() is not None:
                self.processes.stop(process, grace=0)
                self.running[index] = self._start(index)
                self.restarts += 1

    def stop(self) -> None:
        for process in self.running:
            self.processes.stop(process)
        self.running = []

    def victim(self, completions: Completions, indexes: range) -> int:
        """The process to SIGKILL: a pool process that has been running tasks, or a whole worker process."""
        if self.engine.kill == WORKER_PROCESS:
            return self.running[0].pid
        children = {child.pid for child in psutil.Process(self.running[0].pid).children(recursive=True)}
        busy = [completions.process_ids[index] for index in indexes if index in completions.process_ids]
        for process_id in reversed(busy):
            if process_id in children:
                return process_id
        raise RuntimeError(f"No pool process of {self.engine.name} has run a task yet.")


def _produce(processes: env.Processes, environment: dict, engine: Engine, work_dir: Path, *, phase: int,
             count: int, rate: float | None = None):  # fmt: skip
    report_path = work_dir / f"producer-{phase}.json"
    command = [PYTHON, "-m", "bench.producer", engine.module, "--first", str(phase_indexes(phase, 0).start),
               "--count", str(count), "--report", str(report_path)]  # fmt: skip
    if rate:
        command += ["--rate", f"{rate:.3f}"]
    process = processes.start(command, environment=environment, name=f"producer-{engine.name}-{phase}")
    return process, report_path


def _producer_report(processes: env.Processes, process, report_path: Path) -> dict:
    process.wait()
    processes.stop(process)
    if process.returncode != 0:
        raise RuntimeError(f"The producer failed (exit {process.returncode}); see {processes.log_dir}.")
    return json.loads(report_path.read_text())


def _wait_for_first(completions: Completions, phase: int, *, what: str) -> None:
    """Workers just started: wait (longer than any stall) for their first completion."""
    env.wait_for(
        lambda: completions.refresh() or completions.distinct[phase], timeout=STARTUP_TIMEOUT_SECONDS, what=what
    )


def _wait_for_phase(completions: Completions, phase: int, count: int, *, stall_seconds: float,
                    producer=None, supervise: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Until every task of the phase ran, or none has run for `stall_seconds` after the producer finished."""
    last_progress, last_done = time.monotonic(), -1
    while True:
        completions.refresh()
        done = completions.distinct[phase]
        if done >= count:
            return
        if supervise:
            supervise()
        producing = producer is not None and producer.poll() is None
        if done != last_done or producing:
            last_progress, last_done = time.monotonic(), done
        elif time.monotonic() - last_progress > stall_seconds:
            return
        time.sleep(POLL_SECONDS)


def _environment(engine: Engine, broker_url: str, run_dir: Path) -> dict[str, str]:
    record_path = str(run_dir / "completions.log")
    if not engine.needs_database:
        return os.environ | {
            BROKER_URL_VARIABLE: broker_url,
            RECORD_PATH_VARIABLE: record_path,
            "PYTHONPATH": str(env.ROOT),
        }
    _empty_results_table()
    return env.service_environment(
        broker_url=broker_url, sandbox_url=broker_url.replace("/0", "/1"), work_dir=run_dir
    ) | {
        BROKER_URL_VARIABLE: broker_url,
        RECORD_PATH_VARIABLE: record_path,
        "BENCH_CELERY_OVERRIDES": json.dumps(engine.celery_overrides or {}),
    }


def measure_end_to_end(engine: Engine, *, tasks: int, processes: int, run_dir: Path, queued: bool = False) -> dict:
    """One phase on a fresh redis-server, workers warmed up first: tasks/s and worker memory.

    End to end (producer and workers together) by default; with `queued`, the tasks wait in the queue before the
    workers start, and the rate is the workers' drain rate, from the first completion to the last.
    """
    run_dir.mkdir()
    with env.Processes(run_dir) as started:
        broker_url = env.start_redis_server(started, run_dir)
        environment = _environment(engine, broker_url, run_dir)
        completions = Completions(environment[RECORD_PATH_VARIABLE])
        nodes = Nodes(engine, started, environment, processes)
        phase = ENQUEUE if queued else END_TO_END
        if queued:
            producer, report_path = _produce(started, environment, engine, run_dir, phase=phase, count=tasks)
            _producer_report(started, producer, report_path)
        with env.MemorySampler(nodes.ids) as memory:
            nodes.start()
            if not queued:
                warm_up = 10 * processes  # every pool process has run a task and imported what it needs
                producer, report_path = _produce(started, environment, engine, run_dir, phase=DRAIN, count=warm_up)
                _producer_report(started, producer, report_path)
                _wait_for_first(completions, DRAIN, what=f"{engine.name} to start")
                _wait_for_phase(completions, DRAIN, warm_up, stall_seconds=STALL_SECONDS)
                producer, report_path = _produce(started, environment, engine, run_dir, phase=phase, count=tasks)
                _wait_for_phase(completions, phase, tasks, stall_seconds=STALL_SECONDS, producer=producer)
                began = _producer_report(started, producer, report_path)["started"]
            else:
                _wait_for_first(completions, phase, what=f"{engine.name} to start")
                _wait_for_phase(completions, phase, tasks, stall_seconds=STALL_SECONDS)
            nodes.stop()
        times = completions.times_in(phase_indexes(phase, tasks))
    rate = (len(times) - 1) / (times[-1] - times[0]) if queued else len(times) / (times[-1] - began)
    return {
        "tasks_per_s": rate,
        "lost": tasks - completions.distinct[phase],
        "peak_rss_mb": memory.peak_bytes / 2**20,
        "rss_per_process_mb": memory.peak_bytes / 2**20 / max(1, memory.peak_processes),
    }


def run_engine(engine: Engine, settings: Settings, *, run: int, work_dir: Path) -> tuple[dict, dict]:
    """One run of one engine, every phase, on a fresh redis-server. Returns the row and the recovery timeline."""
    run_dir = work_dir / f"{engine.name}-{run}"
    run_dir.mkdir()
    with env.Processes(run_dir) as processes:
        broker_url = env.start_redis_server(processes, run_dir)
        environment = _environment(engine, broker_url, run_dir)
        completions = Completions(environment[RECORD_PATH_VARIABLE])
        nodes = Nodes(engine, processes, environment, settings.processes)
        row: dict = {"engine": engine.name, "run": run, "tasks": settings.tasks, "processes": settings.processes}
        tasks = settings.tasks

        producer, report_path = _produce(processes, environment, engine, run_dir, phase=ENQUEUE, count=tasks)
        enqueued = _producer_report(processes, producer, report_path)
        row["enqueue_per_s"] = tasks / (enqueued["finished"] - enqueued["started"])

        with env.MemorySampler(nodes.ids) as memory:
            started = time.time()
            nodes.start()
            _wait_for_first(completions, ENQUEUE, what=f"{engine.name} to start")
            _wait_for_phase(completions, ENQUEUE, tasks, stall_seconds=STALL_SECONDS)
            times = completions.times_in(phase_indexes(ENQUEUE, tasks))
            row["startup_s"] = times[0] - started
            row["drain_per_s"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None

            producer, report_path = _produce(processes, environment, engine, run_dir, phase=END_TO_END, count=tasks)
            _wait_for_phase(completions, END_TO_END, tasks, stall_seconds=STALL_SECONDS, producer=producer)
            produced = _producer_report(processes, producer, report_path)
            times = completions.times_in(phase_indexes(END_TO_END, tasks))
            row["end_to_end_per_s"] = len(times) / (times[-1] - produced["started"])

            rate = LATENCY_LOAD_FRACTION * row["end_to_end_per_s"]
            count = max(LATENCY_MIN_TASKS, round(rate * settings.latency_seconds))
            producer, report_path = _produce(
                processes, environment, engine, run_dir, phase=LATENCY, count=count, rate=rate
            )
            _wait_for_phase(completions, LATENCY, count, stall_seconds=STALL_SECONDS, producer=producer)
            _producer_report(processes, producer, report_path)
            latencies = completions.latencies_in(phase_indexes(LATENCY, count))
            row["latency_rate_per_s"], row["latency_tasks"] = round(rate, 1), count
            for percent in (50, 95, 99):
                value = report.percentile(latencies, percent)
                row[f"latency_p{percent}_ms"] = value * 1000 if value is not None else None
            nodes.stop()
        row["peak_rss_mb"] = memory.peak_bytes / 2**20
        row["peak_rss_per_process_mb"] = memory.peak_per_process_bytes / 2**20
        row["peak_processes"] = memory.peak_processes
        expected = {ENQUEUE: tasks, END_TO_END: tasks, LATENCY: count}
        row["lost"] = sum(expected[phase] - completions.distinct[phase] for phase in expected)
        row["twice"] = sum(completions.runs[phase] - completions.distinct[phase] for phase in expected)

        timeline = _recovery(engine, settings, row, processes, environment, nodes, completions, run_dir)
    return row, timeline


def _recovery(engine: Engine, settings: Settings, row: dict, processes: env.Processes, environment: dict,
              nodes: Nodes, completions: Completions, run_dir: Path) -> dict:  # fmt: skip
    count = max(RECOVERY_MIN_TASKS, round((row["drain_per_s"] or 0) * settings.recovery_seconds))
    indexes = phase_indexes(RECOVERY, count)
    producer, report_path = _produce(processes, environment, engine, run_dir, phase=RECOVERY, count=count)
    _producer_report(processes, producer, report_path)
    nodes.start()
    _wait_for_first(completions, RECOVERY, what=f"{engine.name} to start again")
    first = completions.times_in(indexes)[0]
    time.sleep(max(0.0, first + settings.recovery_seconds / 4 - time.time()))
    completions.refresh()
    victim = nodes.victim(completions, indexes)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    _wait_for_phase(completions, RECOVERY, count, stall_seconds=settings.grace_seconds, supervise=nodes.restart_exited)
    nodes.stop()

    times = completions.times_in(indexes)
    row["recovery_tasks"], row["recovery_killed"], row["recovery_restarts"] = count, engine.kill, nodes.restarts
    row["recovery_lost"] = count - completions.distinct[RECOVERY]
    row["recovery_twice"] = completions.runs[RECOVERY] - completions.distinct[RECOVERY]
    row["recovery_s"] = recovery_seconds(times, killed_at=killed_at, count=count)
    return {"engine": engine.name, "killed_at": killed_at, "times": times}


def recovery_seconds(times: list[float], *, killed_at: float, count: int) -> float | None:
    """Seconds from the kill until half a second of completions reaches 80 % of the rate before it.

    None when the rate never came back before the queue ran dry (the last 2 % of tasks are not searched:
    there the queue is empty and the rate falls whatever the engine does).
    """
    baseline_start = times[0] + RECOVERY_WARMUP_SECONDS
    before = [moment for moment in times if baseline_start <= moment < killed_at]
    if killed_at - baseline_start <= 0 or not before:
        return None
    baseline = len(before) / (killed_at - baseline_start)
    end = times[min(len(times) - 1, int(count * 0.98))]
    start = killed_at
    while start + RECOVERY_WINDOW_SECONDS <= end:
        in_window = sum(1 for moment in times if start <= moment < start + RECOVERY_WINDOW_SECONDS)
        if in_window / RECOVERY_WINDOW_SECONDS >= RECOVERED_FRACTION * baseline:
            return start - killed_at
        start += RECOVERY_STEP_SECONDS
    return None


def _empty_results_table() -> None:
    """Celery's production row stores every result in PostgreSQL: each run starts from an empty table."""
    with contextlib.closing(env.database()) as connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE django_celery_results_taskresult")


def charts(directory: Path, summary: list[dict], timelines: list[dict]) -> list[str]:
    report.bar_chart(directory / "throughput.png", title="Throughput (median, min-max)", summary=summary,
                     group_by="engine", columns=COLUMNS[:3], ylabel="tasks/s (log scale)", log_scale=True)  # fmt: skip
    report.bar_chart(directory / "latency.png", title="Enqueue-to-completion latency at half load", summary=summary,
                     group_by="engine", columns=COLUMNS[3:6], ylabel="ms (log scale)", log_scale=True)  # fmt: skip
    report.bar_chart(directory / "memory.png", title="Peak RSS, summed over worker processes", summary=summary,
                     group_by="engine", columns=COLUMNS[6:7], ylabel="MB")  # fmt: skip
    _timeline_chart(directory / "recovery.png", timelines)
    return ["throughput.png", "latency.png", "memory.png", "recovery.png"]


def _timeline_chart(path: Path, timelines: list[dict]) -> None:
    """Throughput around the kill (rolling half second), relative to the rate before it; one line per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    for timeline in timelines:
        times, killed_at = timeline["times"], timeline["killed_at"]
        before = (
            [moment for moment in times if times[0] + RECOVERY_WARMUP_SECONDS <= moment < killed_at] if times else []
        )
        if not before:
            continue
        baseline = len(before) / (killed_at - times[0] - RECOVERY_WARMUP_SECONDS)
        starts = [killed_at - 1 + step * RECOVERY_STEP_SECONDS for step in range(int(11 / RECOVERY_STEP_SECONDS))]
        starts = [start for start in starts if start + RECOVERY_WINDOW_SECONDS <= times[-1]]
        ratios = [
            sum(1 for moment in times if start <= moment < start + RECOVERY_WINDOW_SECONDS)
            / RECOVERY_WINDOW_SECONDS
            / baseline
            for start in starts
        ]
        axes.plot([start - killed_at for start in starts], ratios, label=timeline["engine"], linewidth=1)
    axes.axvline(0, color="black", linestyle="--", linewidth=0.8)
    axes.axhline(RECOVERED_FRACTION, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xlabel("seconds from SIGKILL (start of a 0.5 s window)")
    axes.set_ylabel("throughput / throughput before the kill")
    axes.set_title("Recovery after SIGKILL of one worker process (first run)")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(settings: Settings, *, engines: list[Engine], runs: int, results_root: Path | None = None) -> Path:
    """Every run of every engine (interleaved, so that a noisy minute hurts all alike); returns the results folder."""
    header = {
        "Machine": report.machine(),
        "Versions": report.versions(
            [
                "celery",
                "kombu",
                "redis",
                "rq",
                "huey",
                "dramatiq",
                "Django",
                "django-celery-results",
                "psycopg2-binary",
            ],
            database=any(engine.needs_database for engine in engines),
        ),
        "Configuration": {
            "tasks per phase": f"{settings.tasks:,}",
            "runs": str(runs),
            "worker processes per engine": str(settings.processes),
            "latency phase": f"{LATENCY_LOAD_FRACTION:.0%} of the end-to-end rate for {settings.latency_seconds:g} s",
            "recovery phase": f"about {settings.recovery_seconds:g} s of drain, kill after a quarter, "
            f"grace {settings.grace_seconds:g} s",
            "broker": "a fresh redis-server per engine and run, no persistence",
        }
        | {engine.name: f"{engine.configuration}; recovery kills {engine.kill}" for engine in engines},
    }
    print(report.describe("Task queue engines", header))
    rows, timelines = [], []
    with env.work_directory("engines") as work_dir:
        if any(engine.needs_database for engine in engines):
            env.fresh_database(log_dir=work_dir)
        for number in range(1, runs + 1):
            for engine in engines:
                print(f"run {number}/{runs}: {engine.name} ...", flush=True)
                row, timeline = run_engine(engine, settings, run=number, work_dir=work_dir)
                print(
                    "   ", {key: round(value, 2) if isinstance(value, float) else value for key, value in row.items()}
                )
                rows.append(row)
                if number == 1:
                    timelines.append(timeline)
        summary = report.summarize(rows, group_by="engine", columns=COLUMNS)
        directory = report.results_directory("engines", results_root)
        report.write_csv(directory / "runs.csv", rows)
        report.write_csv(directory / "summary.csv", summary)
        (directory / "recovery-timelines.json").write_text(json.dumps(timelines))
        images = charts(directory, summary, timelines)
    table = report.markdown_table(summary, group_by="engine", columns=COLUMNS)
    markdown = report.describe("Task queue engines", header) + "\n## Results (median, min-max)\n\n" + table + "\n\n"
    markdown += "\n".join(f"![{image}]({image})" for image in images) + "\n"
    (directory / "report.md").write_text(markdown)
    print(table)
    print(f"\nResults: {directory}")
    return directory


def redraw(directory: Path) -> None:
    """Draw the charts of a results folder again from its summary.csv and recovery-timelines.json."""
    summary = []
    for line in report.read_csv(directory / "summary.csv"):
        summary.append(
            {key: (float(value) if value and key != "engine" else value or None) for key, value in line.items()}
        )
    charts(directory, summary, json.loads((directory / "recovery-timelines.json").read_text()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per phase (default 20,000; the seed: 100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per engine; the report shows the median (default 3)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="worker processes (default: cores)")
    parser.add_argument(
        "--engines", default=",".join(DEFAULT_ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}"
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--recovery-seconds", type=float, default=12.0, help="drain time queued for recovery")
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="how long to wait for redelivered tasks after a kill before counting them lost",
    )
    parser.add_argument("--results", type=Path, default=None, help="results root (default bench/results)")
    parser.add_argument("--redraw", type=Path, default=None, help="only draw the charts of this results folder again")
    arguments = parser.parse_args(argv)
    if arguments.redraw:
        redraw(arguments.redraw)
        return
    unknown = [name for name in arguments.engines.split(",") if name not in ENGINES]
    if unknown:
        parser.error(f"unknown engines: {', '.join(unknown)}")
    settings = Settings(
        tasks=arguments.tasks,
        processes=arguments.processes,
        latency_seconds=arguments.latency_seconds,
        recovery_seconds=arguments.recovery_seconds,
        grace_seconds=arguments.grace_seconds,
    )
    engines = [ENGINES[name] for name in arguments.engines.split(",")]
    run(settings, engines=engines, runs=arguments.runs, results_root=arguments.results)
