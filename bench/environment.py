"""A private environment for a benchmark run: its own database, its own Redis server, its own processes.

Nothing here touches a shared Redis: every run starts `redis-server` on a free port in a temporary directory.
The database is `BENCH_DATABASE` (default `shop_bench`), cloned from a migrated template so that a fresh
database costs a second rather than a full `migrate`.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg2
import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POSTGRES = {"user": "postgres", "host": "127.0.0.1", "port": 5432}

# Stock set on every product of a fresh bench database: no order of a benchmark ever runs out.
AMPLE_STOCK = 100_000_000
# How long a process gets to exit after SIGTERM before its whole process group is killed.
STOP_GRACE_SECONDS = 15


def bench_database_name() -> str:
    return os.environ.get("BENCH_DATABASE", "shop_bench")


def database_url(name: str | None = None) -> str:
    return f"postgres://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{name or bench_database_name()}"


def service_environment(*, broker_url: str, sandbox_url: str, work_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment of the service's own processes: production settings (DEBUG off) on bench storage."""
    return (
        os.environ
        | {
            "DJANGO_SETTINGS_MODULE": "proj.settings",
            # DEBUG off as in production: with DEBUG on, Django keeps every query in memory (a leak in a worker).
            "DJANGO_DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else-0123456789",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # gunicorn is reached over plain HTTP on the loopback, with no TLS proxy in front.
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url(),
            "REDIS_URL": broker_url,
            "PAYMENT_SANDBOX_REDIS_URL": sandbox_url,
            # Builds every email as SMTP would and records it, without a mail server (see bench/mail.py).
            "EMAIL_BACKEND": "bench.mail.RecordingBackend",
            "BENCH_MAIL_LOG": str(work_dir / "mail.log"),
            "LOG_LEVEL": "WARNING",
            # The per-client limit on placing orders protects the service from one client; the benchmark is one
            # IP address standing for many customers, so the limit is lifted (the limiter's Redis hit stays).
            "ORDER_RATE_LIMIT": "1000000000",
            "PYTHONPATH": str(ROOT),
        }
        | overrides
    )


# --- processes ---------------------------------------------------------------------------------------------------


class Processes:
    """Every process a run starts, each in its own process group, so that it and its children can be stopped.

    Used as a context manager: on leaving (normally, on an error or on Ctrl-C) everything still running is
    terminated, then killed. Only process groups started here are ever signalled.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_all()

    def start(self, command: list[str], *, environment: dict[str, str], name: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        process.bench_name = name  # type: ignore[attr-defined]
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the process (a warm shutdown for every engine), then kill its whole group if it lingers."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the group we created: leftover children included
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


def tree(process_id: int) -> list[psutil.Process]:
    """The process and all its descendants that are still alive."""
    try:
        root = psutil.Process(process_id)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class MemorySampler:
    """Samples the summed RSS of some process trees in a background thread; keeps the peak."""

    INTERVAL_SECONDS = 0.2

    def __init__(self, root_ids: Callable[[], list[int]]) -> None:
        self.root_ids = root_ids
        self.peak_bytes = 0
        self.peak_per_process_bytes = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        sizes = []
        for root_id in self.root_ids():
            for process in tree(root_id):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    sizes.append(process.memory_info().rss)
        if sizes:
            self.peak_bytes = max(self.peak_bytes, sum(sizes))
            self.peak_per_process_bytes = max(self.peak_per_process_bytes, max(sizes))
            self.peak_processes = max(self.peak_processes, len(sizes))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.INTERVAL_SECONDS)


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout} s waiting for {what}.")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def work_directory(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        yield path
    finally:
        if not os.environ.get("BENCH_KEEP_TEMP"):
            shutil.rmtree(path, ignore_errors=True)


# --- Redis -----------------------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of our own on a free port, which a test or a soak can shut down and start again in place.

    With `persistent`, it keeps an append-only file (`appendfsync everysec`, as docker-compose.yml's broker), so a
    restart finds the queues as they were; without, a restart empties it, as the shared development Redis would.
    """

    def __init__(self, processes: Processes, work_dir: Path, *, name: str = "redis", persistent: bool = False) -> None:
        self.processes = processes
        self.name = name
        self.persistent = persistent
        self.process: subprocess.Popen | None = None
        for _attempt in range(5):
            self.port = free_port()
            self.directory = work_dir / f"{name}-{self.port}"
            self.directory.mkdir()
            if self.start():
                return
            self.stop(grace=1)  # the port was taken between probing and binding: try another
        raise RuntimeError("Could not start redis-server on a free port.")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> bool:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        persistence = persistence if self.persistent else ["--appendonly", "no"]
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                   "--save", "", *persistence, "--maxmemory-policy", "noeviction"]  # fmt: skip
        self.process = self.processes.start(command, environment=dict(os.environ), name=f"{self.name}-{self.port}")
        try:
            wait_for(lambda: _answers(self.url), timeout=10, what="redis-server")
        except TimeoutError:
            return False
        return True

    def stop(self, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM: Redis finishes its append-only file and exits, as on a clean restart."""
        if self.process is not None:
            self.processes.stop(self.process, grace=grace)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: whatever Redis had not written to disk is gone, as on a crash."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.processes.stop(self.process, grace=1)
            self.process = None

    def restart(self, *, crash: bool = False) -> None:
        self.kill() if crash else self.stop()
        if not self.start():
            raise RuntimeError(f"redis-server on port {self.port} did not come back.")


def start_redis_server(processes: Processes, work_dir: Path, *, name: str = "redis") -> str:
    """A fresh redis-server on a free port, without persistence; returns its URL (database 0).

    `processes` stops it with everything else, in reverse order of start: after the workers that use it.
    """
    return RedisServer(processes, work_dir, name=name).url


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_version() -> str:
    output = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    return next((part.split("=", 1)[1] for part in output.split() if part.startswith("v=")), output.strip())


# --- PostgreSQL ------------------------------------------------------------------------------------------------


def server_connection():
    connection = psycopg2.connect(dbname="postgres", **POSTGRES)
    connection.autocommit = True
    return connection


def database(name: str | None = None):
    connection = psycopg2.connect(dbname=name or bench_database_name(), **POSTGRES)
    connection.autocommit = True
    return connection


def _migrations_digest() -> str:
    """Changes whenever a migration or the demo catalog changes: the template is rebuilt then."""
    digest = hashlib.sha256()
    paths = [*sorted(ROOT.glob("*/migrations/*.py")), ROOT / "orders/management/commands/seed_catalog.py"]
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fresh_database(*, log_dir: Path) -> str:
    """Recreate the bench database (migrated, demo catalog with ample stock); return its URL."""
    name = bench_database_name()
    template = f"{name}_template"
    digest = _migrations_digest()
    with contextlib.closing(server_connection()) as server, server.cursor() as cursor:
        cursor.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [template])
        row = cursor.fetchone()
        if row is None or row[0] != digest:
            _build_template(cursor, template, digest, log_dir=log_dir)
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return database_url(name)


def _build_template(cursor, template: str, digest: str, *, log_dir: Path) -> None:
    cursor.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    cursor.execute(f'CREATE DATABASE "{template}"')
    environment = os.environ | {
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "DJANGO_DEBUG": "true",
        "DATABASE_URL": database_url(template),
        "LOG_LEVEL": "WARNING",
    }
    for arguments in (["migrate", "--no-input"], ["seed_catalog"]):
        result = subprocess.run(
            [PYTHON, "manage.py", *arguments], cwd=ROOT, env=environment, capture_output=True, text=True
        )
        (log_dir / "template.log").open("a").write(result.stdout + result.stderr)
        result.check_returncode()
    with contextlib.closing(database(template)) as connection, connection.cursor() as template_cursor:
        template_cursor.execute("UPDATE orders_product SET stock = %s", [AMPLE_STOCK])
    cursor.execute(f"COMMENT ON DATABASE \"{template}\" IS '{digest}'")


def postgres_version() -> str:
    with contextlib.closing(server_connection()) as server, server.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]
