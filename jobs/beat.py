"""Beat schedules only while it holds a PostgreSQL advisory lock, so a second beat waits instead of scheduling twice.

One beat process is the rule, but nothing in Kubernetes guarantees it: a rollout overlaps two pods, and a node cut off
from the cluster keeps running its pod while a replacement starts elsewhere. Selected by
`CELERY_BEAT_SCHEDULER = "jobs.beat:LockedDatabaseScheduler"`. The lock lives on a connection of its own: Django's
connections are closed and reopened between ticks (CONN_MAX_AGE), and closing a session releases its locks.
"""

import logging
import os
import signal
import socket
import time
from contextlib import contextmanager, suppress

import psycopg2
from django.db import DEFAULT_DB_ALIAS, connections
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

# The advisory lock's key: b"shopbeat" as a 64-bit number, a key no other code of ours locks.
BEAT_LOCK_KEY = int.from_bytes(b"shopbeat", "big")
# How often a waiting beat tries the lock: the takeover comes at most this long after the holder's session ends.
LOCK_POLL_SECONDS = 1.0
# TCP keepalives on the lock's connection, set on both ends. PostgreSQL ends the session of a holder it cannot reach
# (its node lost or cut off) after about idle + interval x count = 25 s, releasing the lock; the holder's own check
# fails as soon as its connection does. Without them an unreachable holder keeps the lock for the kernel's
# default of two hours.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_COUNT = 3
# Unacknowledged data (the holder's check) is given up on after this long, rather than the kernel's ~15 minutes.
TCP_USER_TIMEOUT_MILLISECONDS = 25_000


class LockLost(Exception):
    """The lock's session ended (connection lost, server restarted): another beat may be scheduling now."""


class BeatLock:
    """A session-level advisory lock on a PostgreSQL connection that nothing else uses or closes."""

    def __init__(self, *, key: int = BEAT_LOCK_KEY) -> None:
        self.key = key
        self.connection: psycopg2.extensions.connection | None = None
        self.name = f"celery-beat {socket.gethostname()} pid {os.getpid()}"

    def _connect(self) -> psycopg2.extensions.connection:
        wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
        parameters = wrapper.get_connection_params()
        server_options = (
            f"-c tcp_keepalives_idle={KEEPALIVE_IDLE_SECONDS} -c tcp_keepalives_interval={KEEPALIVE_INTERVAL_SECONDS}"
            f" -c tcp_keepalives_count={KEEPALIVE_COUNT} -c tcp_user_timeout={TCP_USER_TIMEOUT_MILLISECONDS}"
        )
        parameters |= {
            # Shown in pg_stat_activity, so the waiting beat (and ops) can tell who holds the lock.
            "application_name": self.name,
            "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
            "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
            "keepalives_count": KEEPALIVE_COUNT,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MILLISECONDS,
            "options": f"{parameters.get('options', '')} {server_options}".strip(),
        }
        connection = psycopg2.connect(**parameters)
        connection.autocommit = True
        return connection

    def _query(self, sql: str, parameters: tuple = ()) -> tuple:
        if self.connection is None:
            raise LockLost("no connection to PostgreSQL")
        with self.connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.fetchone()

    def try_acquire(self) -> bool:
        if self.connection is None or self.connection.closed:
            self.connection = self._connect()
        return bool(self._query("SELECT pg_try_advisory_lock(%s)", (self.key,))[0])

    def holder(self) -> str:
        """The application name of the session holding the lock, as far as this one can see."""
        row = self._query(
            "SELECT activity.application_name FROM pg_locks AS locks JOIN pg_stat_activity AS activity USING (pid)"
            " WHERE locks.locktype = 'advisory' AND locks.granted AND locks.objsubid = 1"
            " AND locks.classid = %s::bigint::oid AND locks.objid = %s::bigint::oid",
            (self.key >> 32, self.key & 0xFFFFFFFF),
        )
        return row[0] if row else "unknown (it may just have let go)"

    def acquire(self) -> None:
        """Wait until this process holds the lock; a database that cannot be reached is waited for too."""
        waiting_since = None
        while True:
            try:
                if self.try_acquire():
                    break
                if waiting_since is None:
                    logger.info("Another beat schedules (%s): waiting for its lock.", self.holder())
            except psycopg2.Error as error:
                logger.warning("Beat cannot reach PostgreSQL for its lock (%s): trying again.", error)
                self.release()
            waiting_since = waiting_since or time.monotonic()
            time.sleep(LOCK_POLL_SECONDS)
        waited = f" after waiting {time.monotonic() - waiting_since:.1f} s" if waiting_since else ""
        logger.info("Beat holds the schedule lock%s: scheduling.", waited)

    def confirm(self) -> None:
        """Raise LockLost unless this session still holds the lock (one round trip)."""
        try:
            row = self._query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                " AND pid = pg_backend_pid() AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
                (self.key >> 32, self.key & 0xFFFFFFFF),
            )
        except psycopg2.Error as error:
            raise LockLost(f"the lock's connection failed: {error}") from error
        if row[0] != 1:
            raise LockLost("this session no longer holds the lock")

    def release(self) -> None:
        if self.connection is not None:
            with suppress(Exception):
                self.connection.close()  # ending the session releases the lock
            self.connection = None


@contextmanager
def _stop_on_termination():
    """While beat waits for the lock, SIGTERM and SIGINT stop it at once.

    Celery's own handler would save the schedule first, which builds the scheduler - the one being built.
    """

    def stop(signum, frame):
        raise SystemExit(0)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class LockedDatabaseScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler that holds BeatLock while it schedules.

    Before each message it confirms the lock and stores the entry's new last run, so a beat that takes over reads
    when each entry last ran and does not send it again; a beat that lost the lock stops (the pod restarts it, and
    it waits again).
    """

    def __init__(self, *args, lazy: bool = False, **kwargs) -> None:
        self.lock = BeatLock()
        if not lazy:  # `celery beat` also builds a lazy scheduler for its banner: that one must not wait
            with _stop_on_termination():
                self.lock.acquire()
        super().__init__(*args, lazy=lazy, **kwargs)

    def apply_entry(self, entry, producer=None):
        try:
            self.lock.confirm()
        except LockLost as error:
            logger.error("Beat lost the schedule lock (%s): stopping, so that only one beat schedules.", error)
            raise SystemExit(1) from error
        # Stores the run that tick() just reserved: a beat taking over after this point sees it as done.
        self.sync()
        return super().apply_entry(entry, producer=producer)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lock.release()
