# Importing the Celery app here makes `celery -A proj` work and binds @shared_task to it when Django starts.
from proj.celery import app as celery_app

__all__ = ("celery_app",)
