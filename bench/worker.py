"""How long worker processes take to complete N orders already waiting in the queue.

    python -m bench worker --orders 1000 [--concurrency 1]

Places the orders first (with no worker running), then starts one worker (prefork) and times it until every order
is final and every confirmation email is sent.
"""

import argparse
import contextlib
import time

from bench import environment as env


def worker_command(concurrency: int, *, pool: str = "prefork") -> list[str]:
    """The production worker command (docker-compose.yml, Procfile: every queue but `heavy`), with the given pool
    and concurrency."""
    return [env.PYTHON, "-m", "celery", "-A", "proj", "worker", "--pool", pool, "--concurrency", str(concurrency),
            "--exclude-queues", "heavy", "--loglevel", "INFO"]  # fmt: skip


def count_finished(connection) -> tuple[int, int]:
    """(orders in a final status, notifications sent)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM orders_order WHERE status IN ('completed', 'failed', 'cancelled')),"
            " (SELECT count(*) FROM notifications_notification WHERE status = 'sent')"
        )
        return cursor.fetchone()


def run(*, orders: int, concurrency: int) -> dict:
    with env.work_directory("worker") as work_dir, env.Processes(work_dir) as processes:
        broker_url = env.start_redis_server(processes, work_dir)
        env.fresh_database(log_dir=work_dir)
        environment = env.service_environment(
            broker_url=broker_url, sandbox_url=broker_url.replace("/0", "/1"), work_dir=work_dir
        )
        place = processes.start(
            [env.PYTHON, "manage.py", "place_demo_orders", "--count", str(orders), "--seed", "1"],
            environment=environment,
            name="place",
        )
        if place.wait() != 0:
            raise RuntimeError(f"place_demo_orders failed; see {work_dir}/place.log")
        started = time.monotonic()
        processes.start(worker_command(concurrency), environment=environment, name="worker")
        with contextlib.closing(env.database()) as connection:
            final, notified = 0, 0
            deadline = started + max(120, orders)
            while (final, notified) != (orders, orders):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Only {final} of {orders} orders finished ({notified} notified).")
                time.sleep(0.05)
                final, notified = count_finished(connection)
            elapsed = time.monotonic() - started
            with connection.cursor() as cursor:
                cursor.execute("SELECT status, count(*) FROM orders_order GROUP BY status ORDER BY status")
                statuses = dict(cursor.fetchall())
                drained = drain_seconds(cursor)
    return {
        "orders": orders,
        "worker_processes": concurrency,
        "seconds_to_complete": round(elapsed, 2),
        "orders_per_second": round(orders / elapsed, 1),
        "drain_orders_per_second": round((orders - 1) / drained, 1) if drained else None,
        "statuses": statuses,
    }


def drain_seconds(cursor) -> float | None:
    """From the first order finished to the last notification sent: the workers' time, without their startup."""
    cursor.execute(
        "SELECT EXTRACT(EPOCH FROM (SELECT max(sent_at) FROM notifications_notification)"
        " - (SELECT min(updated_at) FROM orders_order WHERE status IN ('completed', 'failed', 'cancelled')))"
    )
    seconds = cursor.fetchone()[0]
    return float(seconds) if seconds else None


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
        f"{report['seconds_to_complete']} s to complete ({report['orders_per_second']} orders/s, worker startup "
        f"included; {report['drain_orders_per_second']} orders/s from the first order finished to the last email); "
        f"statuses {report['statuses']}"
    )
