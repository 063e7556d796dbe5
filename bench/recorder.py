"""What the trivial task does: append one line per execution to a shared log, for the harness to read.

One `write()` on a file opened with O_APPEND is atomic on Linux, so every worker process (and RQ's forked work
horses) can append to the same file without locks, and a line written survives the writer being SIGKILLed:
the harness counts exactly what ran, how often, and when.
"""

import os
import time
from collections import Counter
from dataclasses import dataclass, field

RECORD_PATH_VARIABLE = "BENCH_RECORD_PATH"

_descriptor: int | None = None


def record_completion(index: int, enqueued_at: float) -> None:
    """Note that task `index`, enqueued at `enqueued_at` (epoch seconds), just ran in this process."""
    global _descriptor
    if _descriptor is None:
        _descriptor = os.open(os.environ[RECORD_PATH_VARIABLE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_descriptor, f"{index} {enqueued_at!r} {time.time()!r} {os.getpid()}\n".encode())


# Task indexes of phase k are k * PHASE_SPAN + 0, 1, 2, ...: a completion tells which phase it belongs to.
PHASE_SPAN = 10_000_000


def phase_indexes(phase: int, count: int) -> range:
    return range(phase * PHASE_SPAN, phase * PHASE_SPAN + count)


@dataclass
class Completions:
    """Reads the log as it grows: per task index, when it was enqueued and every time it completed."""

    path: str
    enqueued_at: dict[int, float] = field(default_factory=dict)
    completed_at: dict[int, list[float]] = field(default_factory=dict)
    process_ids: dict[int, int] = field(default_factory=dict)  # the last process that ran each task
    distinct: Counter = field(default_factory=Counter)  # per phase: tasks that completed at least once
    runs: Counter = field(default_factory=Counter)  # per phase: completions, a task run twice counted twice
    last_completion_at: float = 0.0
    _offset: int = 0
    _partial: bytes = b""

    def refresh(self) -> None:
        try:
            with open(self.path, "rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            index_text, enqueued_at, completed_at, process_id = line.split()
            index = int(index_text)
            phase = index // PHASE_SPAN
            if index not in self.completed_at:
                self.completed_at[index] = []
                self.distinct[phase] += 1
            self.runs[phase] += 1
            self.enqueued_at[index] = float(enqueued_at)
            self.completed_at[index].append(float(completed_at))
            self.process_ids[index] = int(process_id)
            self.last_completion_at = max(self.last_completion_at, float(completed_at))

    def times_in(self, indexes: range) -> list[float]:
        """Every completion time of the tasks in `indexes` (a task run twice counts twice), sorted."""
        return sorted(time for index in indexes for time in self.completed_at.get(index, ()))

    def latencies_in(self, indexes: range) -> list[float]:
        """Seconds from enqueue to first completion, for each task of `indexes` that completed."""
        return [
            self.completed_at[index][0] - self.enqueued_at[index] for index in indexes if index in self.completed_at
        ]
