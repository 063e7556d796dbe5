"""gunicorn entry point of the naive pipeline: `gunicorn bench.naive.wsgi`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.naive.settings")

import bench.naive.celery  # noqa: F401 - the naive app, so .delay() in the web process publishes through it

application = get_wsgi_application()
