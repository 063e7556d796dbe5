"""The service's settings plus the naive app and its URLs. Its Celery app ignores every CELERY_* setting below."""

from proj.settings import *  # noqa: F403
from proj.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.naive"]
ROOT_URLCONF = "bench.naive.urls"
