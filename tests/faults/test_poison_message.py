"""Issue 5, fault 6: a message that kills its process every time is dead-lettered after a bounded number of runs."""

import pytest

from jobs.base import MAX_DELIVERIES
from jobs.models import DeadLetter, TaskDelivery
from tests.faults.helpers import queue_lengths
from tests.faults.poison_tasks import kill_own_process_task
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_a_task_that_kills_its_process_every_time_ends_in_the_dead_letters(faults, tmp_path):
    marker = tmp_path / "runs"
    worker = faults.start_worker(include="tests.faults.poison_tasks")

    result = kill_own_process_task.apply_async(kwargs={"marker": str(marker)})

    dead_letter = wait_for(
        lambda: DeadLetter.objects.filter(task_id=result.id).first(), timeout=90, message="the dead letter"
    )
    # Nothing is delivered again: the runs stay at MAX_DELIVERIES, the queues and the unacked set stay empty.
    wait_for(lambda: queue_lengths(faults) == {"orders": 0, "unacked": 0}, timeout=10, message="empty queues")
    assert len(marker.read_text().splitlines()) == MAX_DELIVERIES
    assert (dead_letter.task_name, dead_letter.kwargs, dead_letter.attempts) == (
        "faults.kill_own_process",
        {"marker": str(marker)},
        MAX_DELIVERIES + 1,
    )
    assert dead_letter.reason == f"Delivered {MAX_DELIVERIES + 1} times without finishing: its process dies each time."
    assert TaskDelivery.objects.get(task_id=result.id).deliveries == MAX_DELIVERIES + 1
    assert len(set(marker.read_text().splitlines())) == MAX_DELIVERIES  # a new pool process each time
    assert worker.process.poll() is None
