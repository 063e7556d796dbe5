"""Log formats: one JSON object per line in production, readable text in development.

While a task runs, every line, whichever logger emits it, carries the task's `task_id`, `task_name` and the
`order_id` it works on (None for tasks about no single order, such as the outbox relay). The worker sets that
context around each task (ops/worker.py); a filter on the handler copies it onto every record.

Periodic housekeeping (the relay every 2 s, the reconcilers) would otherwise fill the log with Celery's lines
about tasks that found nothing to do: `QuietHousekeepingFilter` demotes those to DEBUG, and each housekeeping
task logs one line of its own when it did something.
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
    """Adds the running task's context to every record emitted while a task runs (as logging's `extra` would)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__["task_context"] = _task_context.get()
        return True


def _task_context_of(record: logging.LogRecord) -> TaskContext | None:
    return record.__dict__.get("task_context")


class QuietHousekeepingFilter(logging.Filter):
    """Demotes to DEBUG Celery's INFO lines about the given tasks: beat sending them, a worker receiving them,
    and their success. Their failures and retries, and what the tasks log themselves, stay as they are."""

    def __init__(self, task_names: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self.task_names = frozenset(task_names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or _celery_task_name(record) not in self.task_names:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _celery_task_name(record: logging.LogRecord) -> str | None:
    """The task a Celery log line is about: workers attach it as `data` (received, succeeded), beat as an argument."""
    data = getattr(record, "data", None)
    if isinstance(data, dict):
        return data.get("name")
    if record.name == "celery.beat" and isinstance(record.args, tuple) and len(record.args) == 2:
        return str(record.args[1])  # "Scheduler: Sending due task %s (%s)": the entry, then its task
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log collector: time (UTC), level, logger, message, task context, error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (context := _task_context_of(record)) is not None:
            entry |= {"task_id": context.task_id, "task_name": context.task_name, "order_id": context.order_id}
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
        if (context := _task_context_of(record)) is not None:
            line += f" [{context.task_name} {context.task_id} order={context.order_id}]"
        return line
