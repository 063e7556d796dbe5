"""A test-only task loaded into fault-test workers with `--include`: it kills its own process every time it runs."""

import os
import signal
from pathlib import Path

from celery import shared_task

from jobs.base import ReliableTask


# "faults." is no app of ours, so it is routed to the default queue (orders), like any unknown task.
@shared_task(name="faults.kill_own_process", base=ReliableTask)
def kill_own_process_task(marker: str) -> None:
    """Append a line to `marker` (so the test counts the runs), then die as a segfault or the OOM killer would."""
    with Path(marker).open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)
