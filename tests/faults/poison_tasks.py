"""Test-only tasks loaded into fault-test workers with `--include`: one kills its own process every time it runs,
one retries once with a countdown."""

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


@shared_task(name="faults.retry_once_later", bind=True)
def retry_once_later_task(self, marker: str, countdown: float) -> None:
    """Append `first` to `marker` and retry in `countdown` seconds (a worker holds the retry until then); append
    `again` when the retry runs. The marker counts the runs."""
    with Path(marker).open("a") as runs:
        runs.write("again\n" if self.request.retries else "first\n")
    if not self.request.retries:
        raise self.retry(countdown=countdown, max_retries=1)
