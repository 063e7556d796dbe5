"""Log formats: one JSON object per line in production, readable text in development.

While a task runs, every line, whichever logger emits it, carries the task's `task_id`, `task_name` and the
`order_id` it works on (None for tasks about no single order, such as the outbox relay). The worker sets that
context around each task (proj/worker.py); a filter on the handler copies it onto every record.
"""

import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    task_name: str
    order_id: str | None


# A context variable, not a global: each pool thread (or greenlet) runs its own task.
_task_context: ContextVar[TaskContext | None] = ContextVar("task_context", default=None)


def bind_task_context(*, task_id: str, task_name: str, order_id: str | None) -> None:
    _task_context.set(TaskContext(task_id=task_id, task_name=task_name, order_id=order_id))


def clear_task_context() -> None:
    _task_context.set(None)


class TaskContextFilter(logging.Filter):
    """Adds `task_id`, `task_name` and `order_id` to every record emitted while a task runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _task_context.get()
        record.in_task = context is not None
        if context is not None:
            record.task_id = context.task_id
            record.task_name = context.task_name
            record.order_id = context.order_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log collector: time (UTC), level, logger, message, task context, error."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "in_task", False):
            entry |= {"task_id": record.task_id, "task_name": record.task_name, "order_id": record.order_id}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message [task name id order=...]`: for a developer's terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if getattr(record, "in_task", False):
            line += f" [{record.task_name} {record.task_id} order={record.order_id}]"
        return line
