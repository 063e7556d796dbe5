"""The trivial task on the project's own Celery app: every setting from proj/settings.py, results in PostgreSQL.

BENCH_CELERY_OVERRIDES (JSON, Celery setting names) changes some of them, to measure what each one costs.
"""

import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
django.setup()

from bench.recorder import record_completion  # noqa: E402
from proj.celery import app  # noqa: E402 - Django must be set up first

__all__ = ("app", "enqueue")

app.conf.update(json.loads(os.environ.get("BENCH_CELERY_OVERRIDES", "{}")))


# Declared like the project's own tasks (a result is stored), and routed by jobs/routing.py: "bench" is no app
# of the project, so the task goes to the default queue, "maintenance".
@app.task(name="bench.noop")
def noop_task(index: int, enqueued_at: float) -> None:
    record_completion(index, enqueued_at)


def enqueue(index: int, enqueued_at: float) -> None:
    noop_task.delay(index, enqueued_at)
