"""The one Celery app of the project: configured from Django settings, tasks discovered in every installed app."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")


class App(Celery):
    def connection_for_write(self, url=None, **kwargs):
        """Connections that publish wait at most BROKER_PUBLISH_TIMEOUT_SECONDS for Redis to answer.

        Publishing happens right after a commit, often inside a web request; a Redis that hangs (accepts the
        connection, never answers) would otherwise hold the request for the broker's socket_timeout, which stays
        longer for the consumers. A publish that times out is the outbox relay's to send later.
        """
        from django.conf import settings

        timeout = settings.BROKER_PUBLISH_TIMEOUT_SECONDS
        options = {**self.conf.broker_transport_options, "socket_timeout": timeout, "socket_connect_timeout": timeout}
        kwargs["transport_options"] = options | (kwargs.get("transport_options") or {})
        return super().connection_for_write(url, **kwargs)


app = App("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
def _drop_unusable_database_connections(**kwargs) -> None:
    """Around tasks, what Django does around requests: drop a connection that broke or outlived CONN_MAX_AGE.

    Celery's own fixup would close every connection after each task, costing a reconnect per task; settings turn
    that off (CELERY_DB_REUSE_MAX), so this keeps healthy connections and replaces dead ones.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()


# Probe files, the worker metrics endpoint and per-task log context (ops/worker.py). Imported last: it reads
# Django settings lazily, when a worker starts.
from ops import worker  # noqa: E402

worker.install(app)
