"""The real order pipeline end to end, ours and the article's naive one, and bare Celery on the same broker.

    python -m bench orders [--orders 2000] [--clients 8] [--runs 3] [--placement auto|http|direct]

Per variant and run, on a fresh database and a fresh redis-server: gunicorn serves the API (2 workers), the
production worker command runs the pipeline (prefork, --processes), beat runs the outbox relay (ours), and N
concurrent clients place orders over HTTP, each with an Idempotency-Key. Measured: orders/s from the first
placement until the last order is completed with its email sent and its `order_completed` analytics event stored;
P50/P99 of the POST response time; P50/P99 from placement (the order's commit) to completed; worker RSS. In the
same run, bare Celery (the project's app, a no-op task, same worker command) on the same kind of broker gives the
ratio that holds on any machine: orders/s / no-op tasks/s.

End to end, the web processes and the clients share the machine's cores with the workers, and an HTTP placement
costs more than a no-op's `.delay()`. So each run also measures the workers alone: the orders placed first (by
the placement service, `bench worker`) and then drained, against no-op tasks queued first and then drained.

Placement `direct` calls the placement service in client processes instead of HTTP (no gunicorn); `auto` (the
default) uses HTTP when the service answers POST /api/orders, and says so in the report when it falls back.
"""

import argparse
import contextlib
import http.client
import json
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import engines, report, worker
from bench import environment as env
from bench.report import Column
from bench.worker import worker_command

WEB_WORKERS = 2  # gunicorn sync workers, as many as cores on the reference machine
# Direct placement splits the clients over as many processes as gunicorn has workers, for the same parallelism.
DIRECT_PLACEMENT_PROCESSES = WEB_WORKERS
STALL_SECONDS = 30
READY_TIMEOUT_SECONDS = 120
POLL_SECONDS = 0.2
# Bare Celery runs this many no-op tasks per order placed: an order is at most three task executions.
NOOP_TASKS_PER_ORDER = 3
NOOP_MIN_TASKS = 300


@dataclass(frozen=True)
class Variant:
    name: str
    settings_module: str
    wsgi: str
    description: str
    worker: Callable[[int], list[str]]
    runs_beat: bool


def _naive_worker_command(processes: int) -> list[str]:
    """What tutorials run: the worker with its defaults (and -l info, as they all write it)."""
    return [env.PYTHON, "-m", "celery", "-A", "bench.naive.celery", "worker", "--pool", "prefork",
            "--concurrency", str(processes), "--loglevel", "INFO"]  # fmt: skip


VARIANTS = {
    "ours": Variant(
        "ours",
        "proj.settings",
        "proj.wsgi:application",
        "the service: outbox, guarded transitions, production Celery settings, relay by beat every 2 s",
        worker_command,
        runs_beat=True,
    ),
    "naive": Variant(
        "naive",
        "bench.naive.settings",
        "bench.naive.wsgi:application",
        "the article's: post_save signal, on_commit(lambda: task.delay(id)), Celery defaults, no outbox",
        _naive_worker_command,
        runs_beat=False,
    ),
}

COLUMNS = (
    Column("orders_per_s", "orders/s", 1),
    Column("post_p50_ms", "POST P50 ms", 1),
    Column("post_p99_ms", "POST P99 ms", 1),
    Column("completed_p50_ms", "placed-to-completed P50 ms"),
    Column("completed_p99_ms", "placed-to-completed P99 ms"),
    Column("worker_rss_mb", "worker RSS MB"),
    Column("rss_per_process_mb", "RSS per worker process MB"),
    Column("lost", "orders not completed"),
)
RATIO_COLUMNS = (
    Column("noop_tasks_per_s", "bare Celery no-op tasks/s"),
    Column("ours_over_noop", "ours orders/s / no-op tasks/s", 3),
    Column("queued_ours_over_noop", "queued: ours orders/s / no-op tasks/s", 3),
    Column("ours_over_naive", "ours / naive orders/s", 2),
    Column("rss_ours_over_noop", "ours / no-op RSS per process", 2),
)


@dataclass(frozen=True)
class Settings:
    orders: int
    clients: int
    processes: int
    placement: str  # http or direct
    queued: bool = True  # also measure the workers alone (orders and no-ops queued first, then drained)


def api_answers(url: str) -> bool:
    """Does the service have the orders API? An empty POST must be refused as invalid, not as unknown (404)."""
    parts = url.split(":")
    connection = http.client.HTTPConnection("127.0.0.1", int(parts[-1]), timeout=10)
    try:
        connection.request("POST", "/api/orders", body="{}", headers={"Content-Type": "application/json"})
        return connection.getresponse().status not in (404, 405)
    finally:
        connection.close()


def api_is_merged() -> bool:
    """Does the service route POST /api/orders? Asked of its URLconf, so no server needs to start."""
    probe = "import django; django.setup(); from django.urls import resolve; resolve('/api/orders')"
    environment = env.service_environment(
        broker_url="redis://127.0.0.1:1/0", sandbox_url="", work_dir=Path(tempfile.gettempdir())
    )
    result = subprocess.run([env.PYTHON, "-c", probe], cwd=env.ROOT, env=environment, capture_output=True, text=True)
    if result.returncode != 0 and "Resolver404" not in result.stderr:
        raise RuntimeError(f"Could not load the service's URLconf:\n{result.stderr[-2000:]}")
    return result.returncode == 0


def _start_web(processes: env.Processes, variant: Variant, environment: dict) -> str:
    port = env.free_port()
    command = [env.PYTHON, "-m", "gunicorn", variant.wsgi, "--bind", f"127.0.0.1:{port}",
               "--workers", str(WEB_WORKERS), "--log-level", "warning"]  # fmt: skip
    processes.start(command, environment=environment, name=f"web-{variant.name}")
    env.wait_for(lambda: _port_open(port), timeout=READY_TIMEOUT_SECONDS, interval=0.1, what="gunicorn")
    return f"http://127.0.0.1:{port}"


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _wait_for_log(path: Path, text: str) -> None:
    env.wait_for(lambda: path.exists() and text in path.read_text(errors="replace"),
                 timeout=READY_TIMEOUT_SECONDS, interval=0.1, what=f"{text!r} in {path.name}")  # fmt: skip


def _progress(connection, mail_log: Path) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*),
                   count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')),
                   count(*) FILTER (WHERE status = 'completed'),
                   (SELECT count(*) FROM analytics_event WHERE event_type = 'order_completed')
            FROM orders_order
            """
        )
        placed, final, completed, events = cursor.fetchone()
    emails = mail_log.read_text().count("\n") if mail_log.exists() else 0
    return {"placed": placed, "final": final, "completed": completed, "events": events, "emails": emails}


def _timings(connection, mail_log: Path) -> dict:
    """From the database's own clock: placement (commit) to completion, and when the last side effect landed."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT extract(epoch FROM min(created_at)),
                   extract(epoch FROM max(updated_at) FILTER (WHERE status = 'completed')),
                   array_agg(extract(epoch FROM updated_at - created_at)) FILTER (WHERE status = 'completed'),
                   (SELECT extract(epoch FROM max(recorded_at)) FROM analytics_event)
            FROM orders_order
            """
        )
        first_placed, last_completed, latencies, last_event = cursor.fetchone()
    email_times = [float(line.split()[0]) for line in mail_log.read_text().splitlines()] if mail_log.exists() else []
    ends = [float(moment) for moment in (last_completed, last_event) if moment is not None] + email_times[-1:]
    return {
        "first_placed": float(first_placed or 0),
        "all_done": max(ends) if ends else None,
        "latencies": [float(value) for value in latencies or []],
    }


def _skus() -> list[str]:
    with contextlib.closing(env.database()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT sku FROM orders_product ORDER BY sku")
        return [row[0] for row in cursor.fetchall()]


def run_variant(variant: Variant, settings: Settings, *, run: int, work_dir: Path) -> dict:
    """One run of one variant on a fresh database and redis-server; the row of the report."""
    run_dir = work_dir / f"{variant.name}-{run}"
    run_dir.mkdir()
    with env.Processes(run_dir) as processes:
        broker_url = env.start_redis_server(processes, run_dir)
        env.fresh_database(log_dir=run_dir)
        environment = env.service_environment(
            broker_url=broker_url, sandbox_url=broker_url.replace("/0", "/1"), work_dir=run_dir
        ) | {"DJANGO_SETTINGS_MODULE": variant.settings_module}
        worker = processes.start(variant.worker(settings.processes), environment=environment, name="worker")
        if variant.runs_beat:
            beat = [env.PYTHON, "-m", "celery", "-A", "proj", "beat", "--loglevel", "WARNING",
                    "--schedule", str(run_dir / "beat-schedule")]  # fmt: skip
            processes.start(beat, environment=environment, name="beat")
        url = None
        if settings.placement == "http":
            url = _start_web(processes, variant, environment)
            if not api_answers(url):
                raise RuntimeError(f"{variant.name}: POST /api/orders is not routed: the API is not merged here.")
        _wait_for_log(run_dir / "worker.log", " ready.")

        skus = _skus()
        with contextlib.closing(env.database()) as connection, env.MemorySampler(lambda: [worker.pid]) as memory:
            clients = _start_clients(processes, environment, settings, variant, url, skus, run_dir)
            last_progress, last_seen = time.monotonic(), None
            while True:
                time.sleep(POLL_SECONDS)
                progress = _progress(connection, run_dir / "mail.log")
                placing = any(client.poll() is None for client, _ in clients)
                done = (
                    not placing
                    and progress["final"] == progress["placed"]
                    and progress["emails"] >= progress["completed"]
                    and progress["events"] >= progress["completed"]
                )
                if done:
                    break
                if placing or progress != last_seen:
                    last_progress, last_seen = time.monotonic(), progress
                elif time.monotonic() - last_progress > STALL_SECONDS:
                    break
            timings = _timings(connection, run_dir / "mail.log")
        for client, _ in clients:
            if client.wait() != 0:
                raise RuntimeError(f"A placement client failed; see {run_dir}/placement-*.log")
        placed = [json.loads(path.read_text()) for _, path in clients]
        worker_errors = [
            line for line in (run_dir / "worker.log").read_text(errors="replace").splitlines() if "ERROR/" in line
        ]
    durations = [duration for result in placed for duration in result["durations"]]
    errors: dict[str, int] = {}
    for result in placed:
        for error, count in result["errors"].items():
            errors[error] = errors.get(error, 0) + count
    elapsed = (timings["all_done"] or timings["first_placed"]) - timings["first_placed"]
    row = {
        "variant": variant.name,
        "run": run,
        "placement": settings.placement,
        "orders": settings.orders,
        "clients": settings.clients,
        "placed": progress["placed"],
        "completed": progress["completed"],
        "emails": progress["emails"],
        "events": progress["events"],
        "placement_errors": sum(errors.values()),
        "orders_per_s": progress["completed"] / elapsed if elapsed > 0 else None,
        "worker_rss_mb": memory.peak_bytes / 2**20,
        "rss_per_process_mb": memory.peak_bytes / 2**20 / max(1, memory.peak_processes),
        "lost": settings.orders - progress["completed"],
    }
    for percent in (50, 99):
        post = report.percentile(durations, percent)
        row[f"post_p{percent}_ms"] = post * 1000 if post is not None else None
        completed = report.percentile(timings["latencies"], percent)
        row[f"completed_p{percent}_ms"] = completed * 1000 if completed is not None else None
    row["worker_errors"] = len(worker_errors)
    if errors:
        print(f"    placement errors: {errors}")
    if worker_errors:
        print(f"    {len(worker_errors)} task errors in the worker log, the first: {worker_errors[0][:300]}")
    return row


def _start_clients(processes, environment, settings, variant, url, skus, run_dir) -> list:
    """The load generators: one process for HTTP, or as many as gunicorn workers for direct placement."""
    mode = settings.placement
    count = 1 if mode == "http" else DIRECT_PLACEMENT_PROCESSES
    clients = []
    for number in range(count):
        orders = settings.orders // count + (1 if number < settings.orders % count else 0)
        report_path = run_dir / f"placement-{number}.json"
        command = [env.PYTHON, "-m", "bench.placement", mode, "--variant", variant.name, "--orders", str(orders),
                   "--clients", str(max(1, settings.clients // count)), "--first", str(number * settings.orders),
                   "--skus", ",".join(skus), "--report", str(report_path)]  # fmt: skip
        if url:
            command += ["--url", url]
        clients.append((processes.start(command, environment=environment, name=f"placement-{number}"), report_path))
    return clients


def measure_noop(settings: Settings, *, run: int, work_dir: Path, queued: bool = False) -> dict:
    """Bare Celery in the same run: the project's app and worker command, a no-op task, a fresh redis-server;
    end to end, or with `queued` the tasks queued first and then drained."""
    tasks = max(NOOP_MIN_TASKS, NOOP_TASKS_PER_ORDER * settings.orders)
    result = engines.measure_end_to_end(
        engines.ENGINES["celery-production"],
        tasks=tasks,
        processes=settings.processes,
        run_dir=work_dir / f"noop-{'queued-' if queued else ''}{run}",
        queued=queued,
    )
    return {
        "variant": "bare celery no-op, queued" if queued else "bare celery no-op",
        "run": run,
        "orders": tasks,
        "orders_per_s": result["tasks_per_s"],
        "worker_rss_mb": result["peak_rss_mb"],
        "rss_per_process_mb": result["rss_per_process_mb"],
        "lost": result["lost"],
    }


def measure_queued(settings: Settings, *, run: int, work_dir: Path) -> list[dict]:
    """The workers alone: orders queued first then drained, and as many no-op tasks per order as end to end."""
    drained = worker.run(orders=settings.orders, concurrency=settings.processes)
    completed = drained["statuses"].get("completed", 0)
    ours = {"variant": "ours, queued", "run": run, "orders": settings.orders,
            "orders_per_s": drained["drain_orders_per_second"], "lost": settings.orders - completed}  # fmt: skip
    return [ours, measure_noop(settings, run=run, work_dir=work_dir, queued=True)]


def ratios(rows: list[dict]) -> list[dict]:
    """Per run: ours against bare Celery and against naive (the issue's targets: >= 1/3, >= 1, <= 1.5)."""
    by_run: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_run.setdefault(row["run"], {})[row["variant"]] = row
    lines = []
    for run, variants in sorted(by_run.items()):
        ours, naive, noop = variants.get("ours"), variants.get("naive"), variants.get("bare celery no-op")
        queued, queued_noop = variants.get("ours, queued"), variants.get("bare celery no-op, queued")

        def ratio(top, bottom):
            return top / bottom if top is not None and bottom else None

        lines.append({
            "variant": "ratios",
            "run": run,
            "noop_tasks_per_s": noop and noop["orders_per_s"],
            "ours_over_noop": ratio(ours and ours["orders_per_s"], noop and noop["orders_per_s"]),
            "queued_ours_over_noop": ratio(
                queued and queued["orders_per_s"], queued_noop and queued_noop["orders_per_s"]
            ),
            "ours_over_naive": ratio(ours and ours["orders_per_s"], naive and naive["orders_per_s"]),
            "rss_ours_over_noop": ratio(ours and ours["rss_per_process_mb"], noop and noop["rss_per_process_mb"]),
        })  # fmt: skip
    return lines


def run(settings: Settings, *, variants: list[Variant], runs: int, results_root: Path | None = None) -> Path:
    header = {
        "Machine": report.machine(),
        "Versions": report.versions(["Django", "celery", "kombu", "redis", "gunicorn", "psycopg2-binary"]),
        "Configuration": {
            "orders per run": f"{settings.orders:,}",
            "concurrent clients": str(settings.clients),
            "runs": str(runs),
            "worker processes": f"{settings.processes} (prefork)",
            "web": f"gunicorn, {WEB_WORKERS} sync workers",
            "placement": settings.placement
            + ("" if settings.placement == "http" else " (placement service called in client processes, no HTTP)"),
            "bare Celery": f"{NOOP_TASKS_PER_ORDER} no-op tasks per order (at least {NOOP_MIN_TASKS:,})",
            "queued": "yes: the workers alone, draining orders and no-ops queued first" if settings.queued else "no",
        }
        | {variant.name: variant.description for variant in variants},
    }
    print(report.describe("Order pipeline", header))
    rows = []
    with env.work_directory("orders") as work_dir:
        for number in range(1, runs + 1):
            for variant in variants:
                print(f"run {number}/{runs}: {variant.name} ...", flush=True)
                rows.append(run_variant(variant, settings, run=number, work_dir=work_dir))
                print(
                    "   ",
                    {key: round(value, 2) if isinstance(value, float) else value for key, value in rows[-1].items()},
                )
            print(f"run {number}/{runs}: bare celery no-op ...", flush=True)
            rows.append(measure_noop(settings, run=number, work_dir=work_dir))
            print("   ", rows[-1])
            if settings.queued:
                print(f"run {number}/{runs}: ours and bare celery no-op, queued first, then drained ...", flush=True)
                rows += measure_queued(settings, run=number, work_dir=work_dir)
                print("   ", rows[-2], "\n   ", rows[-1])
    ratio_rows = ratios(rows)
    summary = report.summarize(rows, group_by="variant", columns=COLUMNS)
    ratio_summary = report.summarize(ratio_rows, group_by="variant", columns=RATIO_COLUMNS)
    directory = report.results_directory("orders", results_root)
    report.write_csv(directory / "runs.csv", rows + ratio_rows)
    report.write_csv(directory / "summary.csv", summary + ratio_summary)
    report.bar_chart(directory / "orders-throughput.png", title="Orders/s (bare Celery: no-op tasks/s)",
                     summary=summary, group_by="variant", columns=COLUMNS[:1], ylabel="per second")  # fmt: skip
    report.bar_chart(directory / "orders-latency.png", title="Response and completion times", summary=summary,
                     group_by="variant", columns=COLUMNS[1:5], ylabel="ms (log scale)", log_scale=True)  # fmt: skip
    table = report.markdown_table(summary, group_by="variant", columns=COLUMNS)
    ratio_table = report.markdown_table(ratio_summary, group_by="variant", columns=RATIO_COLUMNS)
    markdown = report.describe("Order pipeline", header)
    markdown += f"\n## Results (median, min-max)\n\n{table}\n\n{ratio_table}\n\n"
    markdown += "![orders/s](orders-throughput.png)\n![latency](orders-latency.png)\n"
    (directory / "report.md").write_text(markdown)
    print(table, ratio_table, f"\nResults: {directory}", sep="\n\n")
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench orders", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000, help="orders per variant and run (default 2000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the report shows the median (default 3)")
    parser.add_argument("--placement", choices=("auto", "http", "direct"), default="auto")
    parser.add_argument("--variants", default="ours,naive", help="comma-separated, of ours, naive")
    parser.add_argument("--results", type=Path, default=None, help="results root (default bench/results)")
    parser.add_argument(
        "--no-queued", action="store_true", help="skip the workers-alone drain of queued orders and no-ops"
    )
    arguments = parser.parse_args(argv)
    placement = arguments.placement
    if placement == "auto":
        placement = "http" if api_is_merged() else "direct"
        if placement == "direct":
            print("The service has no POST /api/orders on this branch: placing orders by calling the services.")
    settings = Settings(
        orders=arguments.orders,
        clients=arguments.clients,
        processes=arguments.processes,
        placement=placement,
        queued=not arguments.no_queued and "ours" in arguments.variants.split(","),
    )
    variants = [VARIANTS[name] for name in arguments.variants.split(",")]
    run(settings, variants=variants, runs=arguments.runs, results_root=arguments.results)
