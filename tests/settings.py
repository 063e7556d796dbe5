"""Settings for the test suite: the project's settings, with test defaults in the environment read before them.

Tests use the real PostgreSQL (pytest-django creates `test_<name>`) and Redis databases of their own (14 for the
broker, 15 for the payment sandbox), so a developer's running service on database 0 is left alone.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("PAYMENT_SANDBOX_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Retries back off for at most a second, so tests that exhaust them finish quickly.
os.environ.setdefault("TASK_MAX_DELAY_SECONDS", "1")

# Product images and thumbnails of this run in a directory of its own, removed at the end by the process that made
# it. An environment variable, so the worker subprocesses that tests start (which inherit it) share the directory.
if "MEDIA_ROOT" not in os.environ:
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="shop-test-media-")
    atexit.register(shutil.rmtree, os.environ["MEDIA_ROOT"], ignore_errors=True)

from proj.settings import *  # noqa: F403
