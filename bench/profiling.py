"""Where an order's time goes: the placement path and a worker processing N queued orders, profiled and counted.

    python -m bench profile [--orders 500]

1. N orders are placed one after the other by the placement service, under pyinstrument (no worker running).
2. One solo-pool worker (the production settings; every task in one profiled thread) processes them, with the
   outbox relay ticking every 2 s as beat would, until every order is completed, its email sent and its three
   analytics events stored.
Per order it reports: SQL statements by task (result-backend writes apart), PostgreSQL transactions (the server's
count), Redis round trips by task (client side) and Redis commands by name (the server's count), task executions,
and wall time split into task bodies, result storage, Celery/kombu machinery, serialization, Redis I/O, SQL.
Numbers are from a single process with a sampling profiler on: shares matter more than absolute milliseconds.
"""

import argparse
import contextlib
import json
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

import redis

from bench import environment as env
from bench import report
from bench.orders import api_is_merged

STALL_SECONDS = 60
# The worker writes its profile on shutdown: a long session needs time to render.
WRITE_PROFILE_SECONDS = 300
EVENTS_PER_ORDER = 3  # order_placed, order_completed, notification_sent


def _transactions() -> int:
    """Committed transactions of the bench database so far, by the server's statistics (this read included)."""
    with contextlib.closing(env.database()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def _commands(client: redis.Redis) -> Counter:
    stats = client.info("commandstats")
    return Counter({
        name.removeprefix("cmdstat_"): values["calls"]
        for name, values in stats.items()
        if name.removeprefix("cmdstat_") not in ("info", "config|resetstat", "config")
    })  # fmt: skip


def _wait_for_pipeline(orders: int) -> int:
    """Until every order is completed, notified and its events stored; returns how many polls it took."""
    polls, last_progress, last_seen = 0, time.monotonic(), None
    with contextlib.closing(env.database()) as connection:
        while True:
            time.sleep(0.2)
            polls += 1
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT (SELECT count(*) FROM orders_order WHERE status = 'completed'),"
                    " (SELECT count(*) FROM notifications_notification WHERE status = 'sent'),"
                    " (SELECT count(*) FROM analytics_event)"
                )
                seen = cursor.fetchone()
            if seen == (orders, orders, EVENTS_PER_ORDER * orders):
                return polls
            if seen != last_seen:
                last_progress, last_seen = time.monotonic(), seen
            elif time.monotonic() - last_progress > STALL_SECONDS:
                raise TimeoutError(f"The pipeline stalled at (completed, notified, events) = {seen}.")


def run(orders: int, *, results_root: Path | None = None) -> Path:
    via_api = api_is_merged()
    header = {
        "Machine": report.machine(),
        "Versions": report.versions(["Django", "celery", "kombu", "redis", "django-celery-results", "pyinstrument"]),
        "Configuration": {
            "orders": f"{orders:,}",
            "placement": "POST /api/orders through Django's test client (view, idempotency, response included)"
            if via_api
            else "the placement service called directly (no HTTP API on this branch)",
            "worker": "one solo-pool process, proj/settings.py, INFO logging",
        },
    }
    print(report.describe("Profile of the order path", header))
    directory = report.results_directory("profile", results_root)
    with env.work_directory("profile") as work_dir, env.Processes(work_dir) as processes:
        broker_url = env.start_redis_server(processes, work_dir)
        env.fresh_database(log_dir=work_dir)
        environment = env.service_environment(
            broker_url=broker_url, sandbox_url=broker_url.replace("/0", "/1"), work_dir=work_dir
        ) | {"ALLOWED_HOSTS": "testserver"}  # Django's test client, for the API placement
        client = redis.Redis.from_url(broker_url)

        print("placing ...", flush=True)
        client.config_resetstat()
        before = _transactions()
        command = [env.PYTHON, "-m", "bench.profiled", "place", "--orders", str(orders), "--report",
                   str(work_dir / "place.json")]  # fmt: skip
        if via_api:
            command.append("--via-api")
        if processes.start(command, environment=environment, name="place").wait() != 0:
            raise RuntimeError(f"Placing failed; see {work_dir}/place.log")
        placement = json.loads((work_dir / "place.json").read_text())
        placement["transactions"] = _transactions() - before - 1
        placement["commands"] = _commands(client)

        print("processing ...", flush=True)
        client.config_resetstat()
        before = _transactions()
        command = [env.PYTHON, "-m", "bench.profiled", "work", "--report", str(work_dir / "work.json")]
        worker = processes.start(command, environment=environment, name="worker")
        started = time.monotonic()
        polls = _wait_for_pipeline(orders)
        elapsed = time.monotonic() - started
        processes.stop(worker, grace=WRITE_PROFILE_SECONDS)
        work = json.loads((work_dir / "work.json").read_text())
        work["transactions"] = _transactions() - before - 1 - polls
        work["commands"] = _commands(client)
        work["elapsed"] = elapsed
        for name in ("place.txt", "work.txt", "worker.log"):
            shutil.copy(work_dir / name, directory / name)
    (directory / "profile.json").write_text(json.dumps({"placement": placement, "worker": work}, indent=1))
    markdown = report.describe("Profile of the order path", header) + render(orders, placement, work)
    (directory / "report.md").write_text(markdown)
    print(render(orders, placement, work))
    print(f"\nResults: {directory}")
    return directory


def _per_order(value: float, orders: int, decimals: int = 2) -> str:
    return f"{value / orders:.{decimals}f}"


def render(orders: int, placement: dict, work: dict) -> str:
    """The per-order tables of the report."""
    via = "POST /api/orders" if placement.get("via") == "api" else "the placement service"
    lines = [f"## Placement path: {orders} orders placed one after the other through {via}", ""]
    durations = placement["durations"]
    lines.append(
        f"- wall time per placement: median {statistics.median(durations) * 1000:.2f} ms, "
        f"mean {statistics.mean(durations) * 1000:.2f} ms (profiler on)"
    )
    statements = Counter(placement["statements"].get("placement", {}))
    lines.append(f"- SQL statements per order: {_per_order(sum(statements.values()), orders)}")
    lines += [f"  - {_per_order(count, orders)} x {name}" for name, count in statements.most_common()]
    lines.append(f"- PostgreSQL transactions per order (server count): {_per_order(placement['transactions'], orders)}")
    trips = placement["round_trips"].get("placement", {})
    lines.append(
        f"- Redis round trips per order: {', '.join(f'{k} {_per_order(v, orders)}' for k, v in trips.items())}"
    )
    commands = Counter(placement["commands"])
    lines.append(
        "- Redis commands per order (server count): "
        + ", ".join(f"{name} {_per_order(count, orders)}" for name, count in commands.most_common())
    )
    lines += ["", "| where the placement's time goes | ms per order | share |", "|---|---|---|"]
    total = placement["time"]["total"]
    for name, seconds in sorted(placement["time"]["cross_cutting"].items(), key=lambda item: -item[1]):
        lines.append(f"| {name} | {seconds / orders * 1000:.2f} | {seconds / total:.0%} |")

    executions = Counter(work["executions"])
    task_count = sum(executions.values())
    lines += ["", f"## Worker: one solo process processing the {orders} queued orders", ""]
    lines.append(f"- wall time from worker start until all done: {work['elapsed']:.1f} s (worker startup included)")
    lines.append(
        f"- task executions per order: {_per_order(task_count, orders)} ("
        + ", ".join(f"{name} {_per_order(count, orders)}" for name, count in executions.most_common())
        + ")"
    )
    lines.append(f"- PostgreSQL transactions per order (server count): {_per_order(work['transactions'], orders)}")
    lines += ["", "| SQL statements per order, by task | statements | the statements |", "|---|---|---|"]
    all_statements = 0
    for label, counts in sorted(work["statements"].items(), key=lambda item: -sum(item[1].values())):
        counts = Counter(counts)
        all_statements += sum(counts.values())
        detail = "; ".join(f"{_per_order(count, orders)} {name}" for name, count in counts.most_common(8))
        lines.append(f"| {label} | {_per_order(sum(counts.values()), orders)} | {detail} |")
    lines.append(f"| **all** | **{_per_order(all_statements, orders)}** | |")
    lines += ["", "| Redis round trips per order, by task | broker | payment sandbox |", "|---|---|---|"]
    for label, counts in sorted(work["round_trips"].items(), key=lambda item: -sum(item[1].values())):
        lines.append(
            f"| {label} | {_per_order(counts.get('broker', 0), orders)} "
            f"| {_per_order(counts.get('payment sandbox', 0), orders)} |"
        )
    commands = Counter(work["commands"])
    lines.append("")
    lines.append(
        f"- Redis commands per order (server count, {_per_order(sum(commands.values()), orders)} in all): "
        + ", ".join(f"{name} {_per_order(count, orders)}" for name, count in commands.most_common(12))
    )
    idle = work["time"]["partition"].get("waiting for messages (idle)", 0)
    busy = work["time"]["total"] - idle
    cpu = work["time"].get("cpu", 0.0)
    lines += [
        "",
        f"- profiled from worker ready to shutdown: {work['time']['total']:.1f} s wall, {idle:.1f} s of it idle; "
        f"{cpu:.1f} s CPU ({cpu / orders * 1000:.1f} ms CPU per order)",
    ]
    lines += ["", "| where the worker's busy time goes (main thread, wall) | ms per order | share |", "|---|---|---|"]
    partition = work["time"]["partition"]
    names = ["Celery and kombu machinery (the rest)", "result backend (store result)", "task bodies"]
    names += sorted((name for name in partition if name.startswith("task body: ")), key=lambda name: -partition[name])
    for name in names:
        seconds = partition.get(name, 0)
        label = f"- {name.removeprefix('task body: ')}" if name.startswith("task body: ") else name
        lines.append(f"| {label} | {seconds / orders * 1000:.2f} | {seconds / busy:.0%} |")
    lines += ["", "| cross-cutting (inside the above) | ms per order | share of busy time |", "|---|---|---|"]
    for name, seconds in sorted(work["time"]["cross_cutting"].items(), key=lambda item: -item[1]):
        lines.append(f"| {name} | {seconds / orders * 1000:.2f} | {seconds / busy:.0%} |")
    machinery = work["time"]["partition"].get("Celery and kombu machinery (the rest)", 0) + work["time"][
        "partition"
    ].get("result backend (store result)", 0)
    lines.append("")
    lines.append(
        f"- Celery overhead per task execution (machinery + result storage, outside task bodies): "
        f"{machinery / max(1, task_count) * 1000:.2f} ms"
    )
    lines.append("")
    lines.append("Full profiles (pyinstrument): work.txt (worker), place.txt (placement).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=500, help="orders to place and process (default 500)")
    parser.add_argument("--results", type=Path, default=None, help="results root (default bench/results)")
    arguments = parser.parse_args(argv)
    run(arguments.orders, results_root=arguments.results)
