"""How long one worker process takes to complete N orders already waiting in the queue.

    python -m bench worker --orders 1000

Places the orders first (with no worker running), then starts one worker process (prefork, concurrency 1) and
times it until every order is final and every confirmation email is sent.
"""

import argparse
import tempfile
import time
from pathlib import Path

from bench import environment as env


def run(*, orders: int, concurrency: int) -> dict:
    environment = env.bench_environment()
    env.fresh_storage(environment)
    env.manage("place_demo_orders", "--count", str(orders), "--seed", "1", environment=environment)
    database = env.database()
    log_path = Path(tempfile.mkdtemp(prefix="bench-worker-")) / "worker.log"

    with env.celery_worker(environment, concurrency=concurrency, log_path=log_path) as (_, ready_after):
        started = time.monotonic()
        deadline = started + max(120, orders)
        while time.monotonic() < deadline:
            with database.cursor() as cursor:
                cursor.execute(
                    "SELECT (SELECT count(*) FROM orders_order WHERE status IN ('completed', 'failed', 'cancelled')),"
                    " (SELECT count(*) FROM notifications_notification WHERE status = 'sent')"
                )
                final, notified = cursor.fetchone()
            if final == orders and notified == orders:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"Only {final} of {orders} orders finished ({notified} notified); see {log_path}")
        elapsed = time.monotonic() - started
    with database.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM orders_order GROUP BY status ORDER BY status")
        statuses = dict(cursor.fetchall())
    return {
        "orders": orders,
        "worker_processes": concurrency,
        "startup_seconds": round(ready_after, 2),
        "seconds_to_complete": round(elapsed, 2),
        "orders_per_second": round(orders / elapsed, 1),
        "statuses": statuses,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1, help="worker processes (default 1)")
    arguments = parser.parse_args(argv)
    report = run(orders=arguments.orders, concurrency=arguments.concurrency)
    print(
        f"{report['orders']} orders, {report['worker_processes']} worker process(es): "
        f"{report['seconds_to_complete']} s to complete ({report['orders_per_second']} orders/s), "
        f"after {report['startup_seconds']} s of worker startup; statuses {report['statuses']}"
    )
