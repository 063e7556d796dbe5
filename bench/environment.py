"""A private environment for a benchmark run: its own database, its own Redis databases, its own workers."""

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

BENCH_DATABASE = "shop_bench"
BROKER_URL = "redis://127.0.0.1:6379/13"
SANDBOX_URL = "redis://127.0.0.1:6379/12"


def bench_environment(**overrides: str) -> dict[str, str]:
    """Environment variables for every process of a run: the service's production settings on bench storage."""
    return (
        os.environ
        | {
            "DJANGO_SETTINGS_MODULE": "proj.settings",
            "DJANGO_DEBUG": "true",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DATABASE}",
            "REDIS_URL": BROKER_URL,
            "PAYMENT_SANDBOX_REDIS_URL": SANDBOX_URL,
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "LOG_LEVEL": "WARNING",
        }
        | overrides
    )


def manage(*arguments: str, environment: dict[str, str]) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *arguments], cwd=ROOT, env=environment, check=True, capture_output=True, text=True
    )
    return result.stdout


def fresh_storage(environment: dict[str, str]) -> None:
    """Recreate the bench database (migrated, catalog seeded with ample stock) and empty the bench Redis databases."""
    server = psycopg2.connect(dbname="postgres", user="postgres", host="127.0.0.1", port=5432)
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    server.close()
    for url in (BROKER_URL, SANDBOX_URL):
        redis.Redis.from_url(url).flushdb()
    manage("migrate", "--no-input", environment=environment)
    manage("seed_catalog", environment=environment)
    database().cursor().execute("UPDATE orders_product SET stock = 1000000")


def database():
    connection = psycopg2.connect(dbname=BENCH_DATABASE, user="postgres", host="127.0.0.1", port=5432)
    connection.autocommit = True
    return connection


@contextmanager
def celery_worker(environment: dict[str, str], *, concurrency: int, pool: str = "prefork", log_path: Path):
    """A real worker process consuming every queue; yields (process, seconds until it reported ready)."""
    command = [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "proj",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        "orders,notifications,analytics,maintenance",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"bench-{os.getpid()}@%h",
    ]
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready_after = wait_for_log(log_path, "ready.", timeout=60) - started
        yield process, ready_after
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_log(path: Path, text: str, *, timeout: float) -> float:
    """Wait until `text` appears in the log file; return the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{text!r} did not appear in {path} within {timeout} s:\n{path.read_text()[-2000:]}")
