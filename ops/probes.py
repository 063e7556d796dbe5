"""Worker liveness and readiness as files, and the tiny command that checks them (Kubernetes `exec` probes).

The worker (ops/worker.py) keeps three files in WORKER_PROBE_DIR:

- `heartbeat`: touched by a timer of the worker's event loop, so it goes stale when the main loop hangs.
- `connecting`: present while the worker has no broker connection (starting up, or reconnecting after a loss).
  The event loop does not run then, so the heartbeat stalls; but restarting the pod would not bring the broker
  back, only crash-loop it, so liveness accepts a stale heartbeat while the worker waits for the broker.
- `ready`: present from `worker_ready` until shutdown begins (SIGTERM), so a pod leaving is not counted as
  available during a rollout while it finishes its tasks.

`python -m ops.probes liveness` (or `readiness`), the command of the Kubernetes and compose probes, uses the
standard library only: no Django, no Celery app, no broker round trip. `celery inspect ping` is no probe: it
loads the whole app, needs the broker and a free main loop to answer within a second, so it fails under load and
during broker outages, and restarts healthy pods.
This module (and `ops/__init__.py`) must stay importable without the project's dependencies for that reason.
"""

import argparse
import os
import sys
import time
from pathlib import Path

HEARTBEAT = "heartbeat"
CONNECTING = "connecting"
READY = "ready"
# A heartbeat older than this means the event loop is stuck (it is touched every few seconds).
DEFAULT_MAX_AGE_SECONDS = 60.0


class ProbeFiles:
    """The probe files of one worker: written by the worker, read by the probe command."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    @property
    def heartbeat(self) -> Path:
        return self.directory / HEARTBEAT

    @property
    def connecting(self) -> Path:
        return self.directory / CONNECTING

    @property
    def ready(self) -> Path:
        return self.directory / READY

    def prepare(self) -> None:
        """Start clean: files left by an earlier run in the same directory must not vouch for this one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.clear()

    def beat(self) -> None:
        self.heartbeat.touch()

    def mark_connecting(self) -> None:
        self.connecting.touch()

    def mark_connected(self) -> None:
        self.connecting.unlink(missing_ok=True)

    def mark_ready(self) -> None:
        self.ready.touch()

    def mark_not_ready(self) -> None:
        self.ready.unlink(missing_ok=True)

    def clear(self) -> None:
        for path in (self.heartbeat, self.connecting, self.ready):
            path.unlink(missing_ok=True)


def check_liveness(files: ProbeFiles, *, max_age: float, now: float | None = None) -> tuple[bool, str]:
    """(alive?, why): alive while the heartbeat is fresh, or while the worker waits for the broker."""
    now = time.time() if now is None else now
    if files.connecting.exists():
        return True, "alive: waiting for the broker (the event loop resumes once it is reachable)"
    try:
        age = now - files.heartbeat.stat().st_mtime
    except FileNotFoundError:
        return False, f"not alive: no heartbeat file at {files.heartbeat}"
    if age > max_age:
        return False, f"not alive: the heartbeat is {age:.0f} s old (limit {max_age:.0f} s)"
    return True, f"alive: heartbeat {age:.1f} s ago"


def check_readiness(files: ProbeFiles) -> tuple[bool, str]:
    """(ready?, why): ready from `worker_ready` until shutdown begins, while connected to the broker."""
    if not files.ready.exists():
        return False, "not ready: the worker has not started consuming, or is shutting down"
    if files.connecting.exists():
        return False, "not ready: the worker lost the broker and is reconnecting"
    return True, "ready: consuming"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.probes",
        description="Check a Celery worker's probe files: exit 0 when the check passes, 1 when it fails.",
    )
    parser.add_argument("check", choices=["liveness", "readiness"], help="which probe to run")
    parser.add_argument(
        "--dir",
        default=os.environ.get("WORKER_PROBE_DIR", ""),
        help="the worker's WORKER_PROBE_DIR (default: that environment variable)",
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=float(os.environ.get("WORKER_PROBE_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS)),
        help=f"oldest acceptable heartbeat, in seconds (default {DEFAULT_MAX_AGE_SECONDS:.0f})",
    )
    arguments = parser.parse_args(argv)
    if not arguments.dir:
        parser.error("give --dir or set WORKER_PROBE_DIR to the directory the worker was started with")
    files = ProbeFiles(arguments.dir)
    if arguments.check == "liveness":
        passed, reason = check_liveness(files, max_age=arguments.max_age)
    else:
        passed, reason = check_readiness(files)
    print(reason)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
