"""The naive pipeline's Celery app: a broker URL and Celery's defaults for everything else, as tutorials do.

Defaults that matter here: acks early (a task dies with its process), prefetch 4 per process, no result backend,
and Django's database connection closed after every task (Celery's Django fixup without DB_REUSE_MAX).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.naive.settings")

# The same variable, and default, as proj/settings.py.
app = Celery("naive", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.autodiscover_tasks(["bench.naive"])
