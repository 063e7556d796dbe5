"""Chaos under load: orders through the HTTP API while workers are killed and Redis restarts; none may be lost or
have an effect twice.

    python -m bench soak [--orders 2000] [--clients 8] [--workers 3] [--concurrency 2] [--kill-every 3] [--seed N]

Everything is its own: a fresh database (`BENCH_DATABASE`, default `shop_soak`), a broker redis-server with an
append-only file (`appendfsync everysec`, as production should run it), another for the payment sandbox's ledger,
gunicorn serving the API, several workers (the production command) and beat (outbox relay, stuck-order
reconciler). Clients place orders with an Idempotency-Key and retry a failed request under the same key. Meanwhile,
every --kill-every seconds, a random worker is SIGKILLed, its whole process group (and a replacement started) or one
pool child (its main process starts another); once, when half the orders are placed, Redis is stopped and started
again. Then chaos stops, the soak waits until every order is final and every effect has landed, and counts, from the
database, the sandbox's ledger and the mail log:

    placed      orders the API answered 201 to
    completed, failed
    lost        placed orders missing or not final at the end
    duplicated  orders charged more than once + orders with more than one `order_completed` analytics event +
                orders with more than one `completed` timeline entry
    lost effects  completed orders without a charge, a confirmation email or an `order_completed` event
    emails resent  orders whose confirmation reached the mail server more than once, always with its one Message-ID

Email is at least once (README, "Guarantees"): a worker killed between the mail server accepting a message and the
commit that records it sent leaves a claim that another worker takes over, and it sends the message again, with
the same Message-ID (mail stores keep one message per Message-ID). No mail protocol lets that window close, so
resends are counted and shown, and do not fail the soak; an order without its confirmation does.

It exits 1 unless lost and duplicated are both 0, and lost effects too (an order can be final and still have lost
its email). The report and the chaos log go to bench/results/soak-<time>/.
"""

import argparse
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from bench import environment as env
from bench import orders, report
from bench.worker import worker_command
from jobs import registry

DEFAULT_DATABASE = "shop_soak"
# The broker's visibility timeout and the worker registry (heartbeat, TTL) are the shipped ones: a message held by a
# worker killed outright comes back through the registry's reaper, as in production. Shorter than production, so
# that the rare message lost between Redis and a worker (kombu pops before it records; README "Guarantees") is
# recovered within the run: the reconcilers (every 10 s) pick up an order stuck longer than
# ORDER_STUCK_AFTER_SECONDS and a notification never sent after NOTIFICATION_MISSING_AFTER_SECONDS, and the relay
# sends again events no consumer confirmed after OUTBOX_EVENT_REDELIVER_AFTER_SECONDS; time limits and retry delays
# are shortened to match. Each can be overridden from the environment.
SOAK_SETTINGS = {
    "CELERY_TASK_SOFT_TIME_LIMIT": "15",
    "CELERY_TASK_TIME_LIMIT": "20",
    "TASK_MAX_DELAY_SECONDS": "10",
    "ORDER_STUCK_AFTER_SECONDS": "45",
    "NOTIFICATION_MISSING_AFTER_SECONDS": "45",
    "OUTBOX_EVENT_REDELIVER_AFTER_SECONDS": "45",
    "ORDER_RECONCILE_INTERVAL_SECONDS": "10",
    "NOTIFICATION_RECONCILE_INTERVAL_SECONDS": "10",
    # A real provider answers in a few hundred milliseconds: with an instant sandbox, kills would almost never land
    # between the charge and the completion, the window the guarantees are about.
    "PAYMENT_SANDBOX_LATENCY_MS": "100",
}
# A client keeps retrying one order under its key this long: longer than any outage the soak causes.
CLIENT_RETRY_SECONDS = 120
# Share of kills that take one pool child rather than a whole worker (main process and children).
POOL_CHILD_SHARE = 0.5
POLL_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 5
# The wait for the end gives up when nothing has moved for this long: longer than the reconcilers' thresholds and
# intervals above, the slowest recovery there is (a message lost between Redis and a worker).
SETTLE_STALL_SECONDS = 120
# Once the clients are done, chaos goes on until every order is final, at most this long.
CHAOS_AFTER_PLACEMENT_MAX_SECONDS = 120
FINAL = ("completed", "failed", "cancelled")
# Lines of the workers' logs worth a look after a soak, even when nothing was lost.
LOG_FINDINGS = {
    "worker crashed (Unrecoverable error)": "Unrecoverable error",
    "dead worker reaped (its messages back in their queues)": "message(s) it held are back in their queues",
    "messages of a lost connection put back": "held on a lost broker connection are back",
    "message rejected without requeue (a retry could not be published)": "reject requeue=False",
    "poison message dead-lettered": "Poison message",
    "deadlock detected (retried)": "deadlock detected",
}
# What the reconcilers and the relay log when they schedule work again. The soak counts the items (the number in
# each line). Its thresholds (45 s) are shorter than its backlog takes to drain, so most of what they schedule was
# only late; `undelivered` tells the lost from the late.
RECONCILED = {
    "orders rescheduled by the stuck-order reconciler": re.compile(r"Scheduling again (\d+) orders unfinished"),
    "orders whose notifications were rescheduled": re.compile(r"notifications of (\d+) final orders"),
    "events sent again by the relay": re.compile(r"Relay sends (\d+) events again"),
}
RECEIVED = re.compile(r"Task ([\w.]+)\[([0-9a-f-]{36})\] received")
MESSAGE_ID = re.compile(r"<([0-9a-f-]{36})\.([a-z_]+)@")
ORDER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Settings:
    orders: int
    clients: int
    workers: int
    concurrency: int
    kill_every: float
    max_kills: int | None
    redis_down: float
    settle_seconds: float
    seed: int


@dataclass
class Chaos:
    """The workers of the soak, and what was done to them. Only process groups started here are ever signalled."""

    processes: env.Processes
    environment: dict[str, str]
    concurrency: int
    chooser: random.Random
    started_at: float = field(default_factory=time.monotonic)
    workers: list[subprocess.Popen] = field(default_factory=list)
    numbered: int = 0
    log: list[str] = field(default_factory=list)
    kills: Counter = field(default_factory=Counter)
    # Where the registry records what each worker holds, to learn which orders a killed worker had in flight.
    broker_url: str = ""
    # (kill time, task name, order id) for every message a worker held when it was killed outright.
    in_flight_at_kill: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self, line: str) -> None:
        line = f"{time.monotonic() - self.started_at:7.1f}s  {line}"
        self.log.append(line)
        print(f"  chaos {line}", flush=True)

    def start_worker(self) -> subprocess.Popen:
        self.numbered += 1
        # Each worker its own node name, as replicas have: a replacement is a new node, not a duplicate one.
        hostname = f"soak{self.numbered}@{socket.gethostname()}"
        command = [*worker_command(self.concurrency), "--hostname", hostname]
        worker = self.processes.start(command, environment=self.environment, name=f"worker-{self.numbered}")
        worker.bench_hostname = hostname  # type: ignore[attr-defined]
        self.workers.append(worker)
        return worker

    def killed(self) -> int:
        return self.kills["whole worker"] + self.kills["pool child"]

    def kill_one(self) -> None:
        worker = self.chooser.choice(self.workers)
        children = [child for child in env.tree(worker.pid)[1:] if _alive(child)]
        if children and self.chooser.random() < POOL_CHILD_SHARE:
            child = self.chooser.choice(children)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            self.kills["pool child"] += 1
            self.record(f"SIGKILL pool child {child.pid} of {worker.bench_name}")  # type: ignore[attr-defined]
            return
        held = self._held_by(worker)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # a group started by Processes: the worker and its pool
        killed_at = time.time()
        self.in_flight_at_kill += [(killed_at, task_name, order_id) for task_name, order_id in held]
        replacement = self._replace(worker)
        self.kills["whole worker"] += 1
        self.record(
            f"SIGKILL {worker.bench_name} (process group {worker.pid}, {len(children)} pool children);"  # type: ignore[attr-defined]
            f" started {replacement.bench_name}"  # type: ignore[attr-defined]
        )

    def _held_by(self, worker: subprocess.Popen) -> list[tuple[str, str]]:
        """(task name, order id) of the messages the registry records the worker as holding, read from kombu's
        unacked hash (a message acknowledged meanwhile is simply not found)."""
        client = redis.Redis.from_url(self.broker_url)
        tags = client.hkeys(registry.held_key(worker.bench_hostname))  # type: ignore[attr-defined]
        held = []
        for raw in client.hmget("unacked", tags) if tags else []:
            if raw is None:
                continue
            message, _exchange, _routing_key = json.loads(raw)
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))  # Celery's message protocol 2
            if order_id := kwargs.get("order_id"):
                held.append((message["headers"]["task"], order_id))
        return held

    def replace_exited(self) -> None:
        """Start a replacement for any worker that exited on its own, as a supervisor (Kubernetes, systemd) would."""
        for worker in [worker for worker in self.workers if worker.poll() is not None]:
            replacement = self._replace(worker)
            self.kills["exited by itself"] += 1
            self.record(
                f"{worker.bench_name} exited by itself (status {worker.returncode}); started"  # type: ignore[attr-defined]
                f" {replacement.bench_name}"  # type: ignore[attr-defined]
            )

    def _replace(self, worker: subprocess.Popen) -> subprocess.Popen:
        """Reap a dead worker (its whole group) and start another in its place."""
        self.processes.stop(worker, grace=0)
        self.workers.remove(worker)
        return self.start_worker()

    def restart_redis(self, broker: env.RedisServer, *, down_seconds: float) -> None:
        self.record(f"stopping the broker redis-server (SIGTERM), down for {down_seconds:g} s")
        broker.stop()
        time.sleep(down_seconds)
        if not broker.start():
            raise RuntimeError(f"The broker redis-server on port {broker.port} did not come back.")
        self.record("broker redis-server is back (append-only file replayed)")


def _alive(process: psutil.Process) -> bool:
    """Running, not a zombie: a pool child killed a moment ago stays listed until its main process reaps it."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def soak_environment() -> dict[str, str]:
    """SOAK_SETTINGS, except what the environment sets itself."""
    return {name: value for name, value in SOAK_SETTINGS.items() if name not in os.environ}


def _progress(connection) -> dict:
    """The pipeline's state, from the database: what is unfinished, and whether every effect has landed."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT count(*) FROM orders_order),
                   (SELECT count(*) FROM orders_order WHERE status NOT IN ('completed', 'failed', 'cancelled')),
                   (SELECT count(*) FROM orders_order WHERE status = 'completed'),
                   (SELECT count(*) FROM jobs_outboxmessage WHERE sent_at IS NULL),
                   (SELECT count(*) FROM notifications_notification WHERE status = 'sending'),
                   (SELECT count(*) FROM orders_order o WHERE status IN ('completed', 'failed')
                      AND NOT EXISTS (SELECT 1 FROM notifications_notification n
                                      WHERE n.order_id = o.id AND n.channel = 'email'
                                        AND n.status IN ('sent', 'failed', 'skipped'))),
                   (SELECT count(*) FROM orders_order o WHERE status = 'completed'
                      AND NOT EXISTS (SELECT 1 FROM analytics_event e
                                      WHERE e.order_id = o.id AND e.event_type = 'order_completed'))
            """
        )
        names = ("orders", "unfinished", "completed", "outbox_unsent", "notifying", "unnotified", "untracked")
        return dict(zip(names, cursor.fetchone(), strict=True))


def _settled(progress: dict) -> bool:
    return not any(progress[name] for name in ("unfinished", "outbox_unsent", "notifying", "unnotified", "untracked"))


def _describe(progress: dict, elapsed: float) -> str:
    return (
        f"  {elapsed:6.1f}s  orders {progress['orders']}, unfinished {progress['unfinished']}, completed "
        f"{progress['completed']}; outbox unsent {progress['outbox_unsent']}, notifications in flight "
        f"{progress['notifying'] + progress['unnotified']}, completions not in analytics {progress['untracked']}"
    )


def start_clients(processes: env.Processes, environment: dict, settings: Settings, url: str, run_dir: Path):
    """One client process of `clients` threads (bench.placement), retrying failed requests under their key."""
    report_path = run_dir / "placement.json"
    command = [env.PYTHON, "-m", "bench.placement", "http", "--url", url, "--orders", str(settings.orders),
               "--clients", str(settings.clients), "--skus", ",".join(orders._skus()), "--report", str(report_path),
               "--retry-seconds", str(CLIENT_RETRY_SECONDS)]  # fmt: skip
    return processes.start(command, environment=environment, name="placement"), report_path


def count(placed_ids: set[str], *, sandbox_url: str, mail_log: Path) -> dict:
    """The verdict, from the database, the sandbox's ledger of charges and the mail log."""
    with contextlib.closing(env.database()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id::text, status, attempts FROM orders_order")
        orders_found = {order_id: (status, attempts) for order_id, status, attempts in cursor.fetchall()}
        cursor.execute(
            "SELECT order_id::text, count(*) FROM analytics_event WHERE event_type = 'order_completed'"
            " GROUP BY order_id"
        )
        completed_events = dict(cursor.fetchall())
        cursor.execute("SELECT order_id::text, count(*) FROM orders_orderevent WHERE status = 'completed' GROUP BY 1")
        completed_entries = dict(cursor.fetchall())
        cursor.execute("SELECT task_name, count(*) FROM jobs_deadletter GROUP BY 1 ORDER BY 1")
        dead_letters = dict(cursor.fetchall())

    ledger = redis.Redis.from_url(sandbox_url, decode_responses=True)
    charges: Counter = Counter()
    for key in ledger.scan_iter("sandbox:charge:*", count=1000):
        match = ORDER_ID.search(key)
        charges[match.group(0) if match else key] += 1  # one ledger entry per idempotency key: per order, once
    emails: Counter = Counter()
    if mail_log.exists():
        for line in mail_log.read_text().splitlines():
            match = MESSAGE_ID.search(line)
            emails[match.groups() if match else ("?", line)] += 1

    statuses = Counter(orders_found[order_id][0] if order_id in orders_found else "missing" for order_id in placed_ids)
    lost = sorted(order_id for order_id in placed_ids if orders_found.get(order_id, ("missing",))[0] not in FINAL)
    completed_ids = {order_id for order_id in placed_ids if orders_found.get(order_id, ("",))[0] == "completed"}
    duplicates = {
        "charged more than once": sorted(order_id for order_id, number in charges.items() if number > 1),
        "more than one order_completed event": sorted(o for o, number in completed_events.items() if number > 1),
        "more than one completed timeline entry": sorted(o for o, number in completed_entries.items() if number > 1),
    }
    missing = {
        "completed without a charge": sorted(completed_ids - set(charges)),
        "completed without a confirmation email": sorted(
            order_id for order_id in completed_ids if not emails[(order_id, "order_confirmation")]
        ),
        "completed without an order_completed event": sorted(completed_ids - set(completed_events)),
    }
    resent = sorted(
        order_id for (order_id, kind), number in emails.items() if kind == "order_confirmation" and number > 1
    )
    return {
        "placed": len(placed_ids),
        "resent": resent,
        "completed": statuses["completed"],
        "failed": statuses["failed"],
        "cancelled": statuses["cancelled"],
        "lost": len(lost),
        "duplicated": sum(len(ids) for ids in duplicates.values()),
        "lost_effects": sum(len(ids) for ids in missing.values()),
        "lost_ids": lost,
        "duplicates": duplicates,
        "missing": missing,
        "not_placed_but_stored": len(set(orders_found) - placed_ids),
        "orders_resumed": sum(1 for order_id in placed_ids if orders_found.get(order_id, ("", 0))[1] > 1),
        "dead_letters": dead_letters,
        "emails": sum(emails.values()),
        "charges": len(charges),
    }


def recovery(in_flight_at_kill: list[tuple[float, str, str]]) -> dict[str, dict]:
    """For the work killed workers held, seconds from the kill until it was done: an order's processing (its final
    timeline entry), an order's notifications (the last one sent). Work finished before the kill (its
    acknowledgement was still on the way) counts 0. Median, P99 and max per kind, and how many."""
    seconds: dict[str, list[float]] = {"process_order": [], "send_notification": []}
    with contextlib.closing(env.database()) as connection, connection.cursor() as cursor:
        for killed_at, task_name, order_id in in_flight_at_kill:
            if task_name == "orders.process_order":
                cursor.execute(
                    "SELECT max(created_at) FROM orders_orderevent WHERE order_id = %s"
                    " AND status IN ('completed', 'failed', 'cancelled')",
                    [order_id],
                )
                kind = "process_order"
            elif task_name == "notifications.send_notification":
                cursor.execute("SELECT max(sent_at) FROM notifications_notification WHERE order_id = %s", [order_id])
                kind = "send_notification"
            else:
                continue
            (done_at,) = cursor.fetchone()
            if done_at is not None:
                seconds[kind].append(max(done_at.timestamp() - killed_at, 0.0))
    return {kind: _summary(values) for kind, values in seconds.items()}


def _summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"count": len(values), "median": statistics.median(values), "p99": p99, "max": ordered[-1]}


def reconciled(work_dir: Path) -> dict[str, int]:
    """What the reconcilers and the relay recovered (RECONCILED), summed over the workers' logs."""
    found: Counter = Counter()
    for path in work_dir.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            for name, pattern in RECONCILED.items():
                if match := pattern.search(line):
                    found[name] += int(match.group(1))
    return {name: found[name] for name in RECONCILED}


def undelivered(work_dir: Path) -> dict[str, list[str]]:
    """Per task, the first messages published for an order that no worker ever took (the ids).

    The first process_order of each order, the first send_notification of each notification it owed: their outbox id
    is their task id, and every worker logs "Task <name>[<id>] received" when it takes one. Published and never
    taken means lost in Redis; the reconcilers redid that work. Taken late is not lost: a reconciler's copy of it
    finds the work done.
    """
    received: dict[str, set[str]] = {"orders.process_order": set(), "notifications.send_notification": set()}
    for path in work_dir.glob("worker-*.log"):
        for match in RECEIVED.finditer(path.read_text(errors="replace")):
            if match.group(1) in received:
                received[match.group(1)].add(match.group(2))
    with contextlib.closing(env.database()) as connection, connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT ON (name, payload->>'order_id', payload->>'kind', payload->>'channel') name, id::text
            FROM jobs_outboxmessage
            WHERE kind = 'task' AND sent_at IS NOT NULL AND name = ANY(%s)
            ORDER BY name, payload->>'order_id', payload->>'kind', payload->>'channel', created_at
            """,
            [list(received)],
        )
        first = cursor.fetchall()
    lost: dict[str, list[str]] = {name: [] for name in received}
    for name, message_id in first:
        if message_id not in received[name]:
            lost[name].append(message_id)
    return lost


def diagnose(order_ids: list[str]) -> list[str]:
    """For orders whose effects went wrong: their confirmation's notification row and outbox message, one line each.

    No notification row although its outbox message was sent means the task never ran: the message was lost between
    Redis and a worker. A row sent after several attempts means a worker died after sending, before marking it sent.
    """
    if not order_ids:
        return []
    with contextlib.closing(env.database()) as connection, connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT o.id::text, o.status, o.attempts, n.status, n.attempts, m.id::text, m.sent_at, m.publish_attempts
            FROM orders_order o
            LEFT JOIN notifications_notification n
              ON n.order_id = o.id AND n.channel = 'email' AND n.kind = 'order_confirmation'
            LEFT JOIN jobs_outboxmessage m
              ON m.name = 'notifications.send_notification' AND m.payload->>'order_id' = o.id::text
             AND m.payload->>'kind' = 'order_confirmation' AND m.payload->>'channel' = 'email'
            WHERE o.id::text = ANY(%s)
            ORDER BY o.id
            """,
            [order_ids],
        )
        rows = cursor.fetchall()
    return [
        f"- order {order_id} ({status}, processing started {attempts}x): confirmation "
        + (f"{notification} after {tries} attempt(s)" if notification else "never claimed by any task")
        + (f"; its message {message} published {published} time(s), last at {sent_at:%H:%M:%S.%f}" if sent_at else "")
        for order_id, status, attempts, notification, tries, message, sent_at, published in rows
    ]


def log_findings(work_dir: Path) -> dict[str, int]:
    """How many times each of LOG_FINDINGS appears in the workers' logs (one log record per line)."""
    found = Counter()
    for path in work_dir.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            found.update(name for name, text in LOG_FINDINGS.items() if text in line)
    return {name: found[name] for name in LOG_FINDINGS}


def soak(settings: Settings, *, work_dir: Path) -> tuple[dict, Chaos, dict]:
    """One soak, start to finish; (counts, chaos, placement report)."""
    with env.Processes(work_dir) as processes:
        broker = env.RedisServer(processes, work_dir, name="broker", persistent=True)
        sandbox = env.RedisServer(processes, work_dir, name="sandbox")
        env.fresh_database(log_dir=work_dir)
        environment = env.service_environment(
            broker_url=broker.url, sandbox_url=sandbox.url, work_dir=work_dir, **soak_environment()
        )
        beat = [env.PYTHON, "-m", "celery", "-A", "proj", "beat", "--loglevel", "WARNING",
                "--schedule", str(work_dir / "beat-schedule")]  # fmt: skip
        processes.start(beat, environment=environment, name="beat")
        chaos = Chaos(processes, environment, settings.concurrency, random.Random(settings.seed), broker_url=broker.url)
        for _ in range(settings.workers):
            chaos.start_worker()
        url = orders._start_web(processes, orders.VARIANTS["ours"], environment)
        for worker in chaos.workers:
            orders._wait_for_log(work_dir / f"{worker.bench_name}.log", " ready.")  # type: ignore[attr-defined]

        chaos.started_at = time.monotonic()
        chaos.record(f"placing {settings.orders} orders with {settings.clients} clients; chaos begins")
        client, placement_report = start_clients(processes, environment, settings, url, work_dir)
        with contextlib.closing(env.database()) as connection:
            last_kill = last_print = time.monotonic()
            redis_restarted, placement_done_at = False, None
            while True:
                time.sleep(POLL_SECONDS)
                now = time.monotonic()
                progress = _progress(connection)
                if placement_done_at is None and client.poll() is not None:
                    placement_done_at = now
                    chaos.record(f"the clients are done (exit status {client.returncode})")
                if not redis_restarted and (progress["orders"] >= settings.orders / 2 or placement_done_at):
                    chaos.restart_redis(broker, down_seconds=settings.redis_down)
                    redis_restarted = True
                chaos.replace_exited()
                kills_left = settings.max_kills is None or chaos.killed() < settings.max_kills
                if now - last_kill >= settings.kill_every and kills_left:
                    chaos.kill_one()
                    last_kill = now
                if now - last_print >= PROGRESS_EVERY_SECONDS:
                    print(_describe(progress, now - chaos.started_at), flush=True)
                    last_print = now
                if placement_done_at is not None and (
                    not progress["unfinished"] or now - placement_done_at > CHAOS_AFTER_PLACEMENT_MAX_SECONDS
                ):
                    break
            chaos.record(f"chaos ends: {dict(chaos.kills)}, 1 Redis restart")

            settle_until = time.monotonic() + settings.settle_seconds
            last_change, last_seen = time.monotonic(), None
            while not _settled(progress := _progress(connection)) and time.monotonic() < settle_until:
                chaos.replace_exited()
                if progress != last_seen:
                    last_change, last_seen = time.monotonic(), progress
                elif time.monotonic() - last_change > SETTLE_STALL_SECONDS:
                    break
                if time.monotonic() - last_print >= PROGRESS_EVERY_SECONDS:
                    print(_describe(progress, time.monotonic() - chaos.started_at), flush=True)
                    last_print = time.monotonic()
                time.sleep(POLL_SECONDS)
            chaos.record(
                "settled: every order final and every effect landed"
                if _settled(progress)
                else f"gave up waiting (nothing moved for {SETTLE_STALL_SECONDS} s, or {settings.settle_seconds:g} s"
                f" passed): {_describe(progress, 0).strip()}"
            )
        if client.returncode != 0:
            raise RuntimeError(f"The placement client failed; see {work_dir}/placement.log")
        placement = json.loads(placement_report.read_text())
        counts = count(set(placement["ids"].values()), sandbox_url=sandbox.url, mail_log=work_dir / "mail.log")
        counts["duration_s"] = time.monotonic() - chaos.started_at
        counts["settled"] = _settled(progress)
        counts["log_findings"] = log_findings(work_dir)
        counts["recovery"] = recovery(chaos.in_flight_at_kill)
        counts["reconciled"] = reconciled(work_dir)
        counts["undelivered"] = undelivered(work_dir)
        counts["kills"] = dict(chaos.kills)
        wrong = [*counts["duplicates"].values(), *counts["missing"].values(), counts["resent"]]
        counts["diagnosis"] = diagnose(sorted({order_id for ids in wrong for order_id in ids}))
    return counts, chaos, placement


def passed(counts: dict) -> bool:
    """Nothing lost, nothing twice. A completed order whose charge, confirmation or analytics event never happened
    lost an effect: that fails the soak too, though the order itself is final."""
    return counts["lost"] == 0 and counts["duplicated"] == 0 and counts["lost_effects"] == 0


def render(settings: Settings, counts: dict, chaos: Chaos, placement: dict) -> tuple[str, str]:
    """(the table printed at the end, the whole Markdown report)."""
    table = "\n".join([
        "| placed | completed | failed | lost | duplicated effects | lost effects | duration |",
        "|---|---|---|---|---|---|---|",
        f"| {counts['placed']:,} | {counts['completed']:,} | {counts['failed']:,} | {counts['lost']:,} "
        f"| {counts['duplicated']:,} | {counts['lost_effects']:,} | {counts['duration_s']:.0f} s |",
    ])  # fmt: skip
    verdict = "PASS" if passed(counts) else "FAIL"
    details = [f"- {name}: {len(ids)}" + (f" (e.g. {', '.join(ids[:3])})" if ids else "")
               for name, ids in counts["duplicates"].items()]  # fmt: skip
    missing = [f"- {name}: {len(ids)}" + (f" (e.g. {', '.join(ids[:3])})" if ids else "")
               for name, ids in counts["missing"].items()]  # fmt: skip
    observations = [
        f"- orders asked for: {settings.orders:,}; client errors after retrying: {placement['errors'] or 'none'}",
        f"- requests retried under their Idempotency-Key: {placement['retries'] or 'none'}; "
        f"answered as replays: {placement['replayed']}",
        f"- orders stored without a 201 to their client: {counts['not_placed_but_stored']}",
        f"- cancelled: {counts['cancelled']}; lost ids: {', '.join(counts['lost_ids'][:5]) or 'none'}",
        f"- orders whose processing started more than once (a worker died or a message came twice): "
        f"{counts['orders_resumed']}",
        f"- dead letters: {counts['dead_letters'] or 'none'}",
        f"- emails sent: {counts['emails']:,}; charges in the sandbox ledger: {counts['charges']:,}",
        f"- confirmations resent with their Message-ID (a worker killed between the mail server and the commit; "
        f"email is at least once): {len(counts['resent'])}"
        + (f" ({', '.join(counts['resent'][:3])})" if counts["resent"] else ""),
        f"- settled before the deadline: {'yes' if counts['settled'] else 'NO'}",
        f"- workers that exited by themselves (replaced, as a supervisor would): {chaos.kills['exited by itself']}",
        *(f"- in the worker logs, {name}: {number}" for name, number in counts["log_findings"].items()),
        *(
            f"- scheduled again by the reconcilers or the relay (lost, or only later than their thresholds), "
            f"{name}: {number}"
            for name, number in counts["reconciled"].items()
        ),
        *(
            f"- published and never taken by any worker (lost in Redis; a reconciler redid the work), {name}: "
            f"{len(ids)}" + (f" (e.g. {', '.join(ids[:3])})" if ids else "")
            for name, ids in counts["undelivered"].items()
        ),
    ]
    recovery_rows = [
        f"| {kind} | {summary['count']} | "
        + (" | ".join(f"{summary[key]:.1f}" for key in ("median", "p99", "max")) if summary["count"] else "- | - | -")
        + " |"
        for kind, summary in counts["recovery"].items()
    ]
    recovery_table = "\n".join([
        "| work held by a worker killed outright | how many | seconds to done: median | P99 | max |",
        "|---|---|---|---|---|",
        *recovery_rows,
    ])  # fmt: skip
    header = {
        "Machine": report.machine(),
        "Versions": report.versions(["Django", "celery", "kombu", "redis", "gunicorn", "psycopg2-binary"]),
        "Configuration": {
            "orders": f"{settings.orders:,}, placed over HTTP by {settings.clients} clients (Idempotency-Key, retried)",
            "workers": f"{settings.workers} x prefork concurrency {settings.concurrency}, all queues; beat",
            "web": f"gunicorn, {orders.WEB_WORKERS} sync workers",
            "broker": "its own redis-server, appendonly yes, appendfsync everysec",
            "chaos": f"SIGKILL a random worker every {settings.kill_every:g} s ({POOL_CHILD_SHARE:.0%} a pool child, "
            f"else its whole process group, then a replacement); Redis stopped for {settings.redis_down:g} s once",
            "settings": ", ".join(f"{name}={os.environ.get(name, value)}" for name, value in SOAK_SETTINGS.items()),
            "seed": str(settings.seed),
        },
    }
    markdown = report.describe("Soak: chaos under load", header)
    markdown += f"\n## Result: {verdict}\n\n{table}\n\n### Duplicated effects\n\n" + "\n".join(details)
    markdown += "\n\n### Lost effects (of orders that are final)\n\n" + "\n".join(missing)
    if counts["diagnosis"]:
        markdown += "\n\n### Orders with a lost, duplicated or resent effect\n\n" + "\n".join(counts["diagnosis"])
    markdown += "\n\n### Recovery of what killed workers held\n\n" + recovery_table
    markdown += "\n\n### Observations\n\n" + "\n".join(observations)
    markdown += "\n\n## Chaos log\n\n```\n" + "\n".join(chaos.log) + "\n```\n"
    diagnosis = [*counts["diagnosis"], ""] if counts["diagnosis"] else []
    printed = "\n".join(
        [table, "", "duplicated effects:", *details, "", "lost effects:", *missing, "", *diagnosis, recovery_table,
         "", *observations]
    )  # fmt: skip
    printed += f"\n\n{verdict}"
    return printed, markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000, help="orders to place (default 2000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes, each prefork (default 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (default 2)")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills (default 3)")
    parser.add_argument("--max-kills", type=int, default=None, help="stop killing after this many (default: never)")
    parser.add_argument("--redis-down", type=float, default=3.0, help="seconds Redis stays down (default 3)")
    parser.add_argument("--settle-seconds", type=float, default=300, help="longest wait for the end (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the chaos' choices (default: random)")
    parser.add_argument("--results", type=Path, default=None, help="results root (default bench/results)")
    arguments = parser.parse_args(argv)
    os.environ.setdefault("BENCH_DATABASE", DEFAULT_DATABASE)
    settings = Settings(
        orders=arguments.orders,
        clients=arguments.clients,
        workers=arguments.workers,
        concurrency=arguments.concurrency,
        kill_every=arguments.kill_every,
        max_kills=arguments.max_kills,
        redis_down=arguments.redis_down,
        settle_seconds=arguments.settle_seconds,
        seed=arguments.seed if arguments.seed is not None else random.SystemRandom().randrange(2**31),
    )
    print(f"Soak: {settings}, database {env.bench_database_name()}", flush=True)
    with env.work_directory("soak") as work_dir:
        counts, chaos, placement = soak(settings, work_dir=work_dir)
        printed, markdown = render(settings, counts, chaos, placement)
        directory = report.results_directory("soak", arguments.results)
        (directory / "report.md").write_text(markdown)
        (directory / "counts.json").write_text(json.dumps(counts, indent=2))
        (directory / "logs").mkdir()
        for path in [*work_dir.glob("*.log"), work_dir / "placement.json"]:
            with contextlib.suppress(FileNotFoundError):
                (directory / "logs" / path.name).write_bytes(path.read_bytes())
        if not passed(counts):
            # The broker's append-only file is every command Redis ran: where a lost message was pushed and popped.
            for broker in work_dir.glob("broker-*/"):
                shutil.copytree(broker, directory / "logs" / broker.name)
    print(printed, f"\nReport: {directory / 'report.md'}", sep="\n", flush=True)
    sys.exit(0 if passed(counts) else 1)
