"""Settings for the order-processing service.

Every value that differs between machines comes from the environment (see `.env.example`); the defaults suit a
developer's laptop. With DJANGO_DEBUG off, the service refuses to start without a real SECRET_KEY.
"""

import os
from pathlib import Path
from typing import Any

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from jobs import routing

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Django core -----------------------------------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", default=False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_DEBUG is off (see .env.example).")
    SECRET_KEY = "insecure-development-key-never-use-in-production"  # noqa: S105 - development only

# Production names its hosts; Django refuses requests for any other (Host header attacks).
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
# Origins whose POSTs (the storefront's form) pass the CSRF check when served behind a proxy on another host.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles: runserver leaves static files to WhiteNoise, as in production.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # PostgreSQL's own fields and operations: the outbox's awaited consumers are an array (jobs/models.py).
    "django.contrib.postgres",
    "django_celery_results",
    "django_celery_beat",
    # django-ninja serves its API docs (Swagger UI) from its own static files when it is an installed app.
    "ninja",
    "jobs",
    "orders",
    "notifications",
    "analytics",
    "exports",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from the app server (no CDN, no separate web server), before anything else runs.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # The JSON API's boundary: rejects what it cannot read (413, 415) and renders every error in one shape.
    "core.api_errors.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "proj.urls"
WSGI_APPLICATION = "proj.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Every app keeps its templates in <app>/templates (the ops page's are in ops/).
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/shop"),
        # Persistent connections: a worker runs thousands of tasks a minute and must not reconnect for each.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        # A connection dropped by the server (restart, pg_terminate_backend) is noticed before it is reused.
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # In production WhiteNoise serves compressed files under content-hashed names, cacheable forever; they are
    # made by `collectstatic`. In development the files are served as they are, with no build step.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# In development WhiteNoise serves the apps' static folders as they change; in production, STATIC_ROOT only.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security (production values; `manage.py check --deploy` passes with DJANGO_DEBUG off) ---------------------

# The TLS proxy in front of the app tells it the client's scheme; only trust this header behind such a proxy.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Plain-HTTP requests are redirected (301) to HTTPS. Right behind a TLS proxy; off for plain HTTP on a laptop.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Browsers remember to use HTTPS only for this long (30 days), for this host and its subdomains.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
# Opt-in: the preload list is hard to leave and requires max-age of a year or more and includeSubDomains.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
# `check --deploy` warns while preload is off; off is the deliberate default above.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# Health probes and metrics are scraped over plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# --- Logging -----------------------------------------------------------------------------------------------------

# One JSON object per line in production (for the log collector), readable text in development (core/logging.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', not {LOG_FORMAT!r}.")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "task_context": {"()": "core.logging.TaskContextFilter"},
        # Every beat entry is housekeeping: Celery's lines about its runs only show at DEBUG (set after the schedule).
        "quiet_housekeeping": {"()": "core.logging.QuietHousekeepingFilter"},
    },
    "formatters": {
        "text": {"()": "core.logging.TextFormatter"},
        "json": {"()": "core.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["task_context", "quiet_housekeeping"],
        },
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# --- Email and push ----------------------------------------------------------------------------------------------

EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
# Where the file email backend writes (development only).
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
# A hung mail server must fail the send (and retry it), not hold a worker slot until the hard time limit.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "orders@shop.example")

# ntfy-compatible push server (`POST {PUSH_URL}/{topic}`); push notifications are skipped when it is empty.
PUSH_URL = os.environ.get("PUSH_URL", "")
PUSH_TIMEOUT_SECONDS = env_float("PUSH_TIMEOUT_SECONDS", 5.0)

# --- Orders and payments -------------------------------------------------------------------------------------------

# The currency of the demo catalog (`seed_catalog`); an order's currency is its products'.
SHOP_CURRENCY = os.environ.get("SHOP_CURRENCY", "EUR")
# Where the shop delivers: an order names one of these, and anything else is refused (422). Each region has a queue
# of its own, `cloud.<region>`, for the tasks that carry the order's personal data (jobs/routing.py).
ORDER_REGIONS = env_list("ORDER_REGIONS", "eu,us,ap")
# Regions whose orders' personal data must stay in the region: processed only by that region's workers, never by
# the public pool; with none alive their orders wait (README "Regions and data residency").
STRICT_RESIDENCY_REGIONS = env_list("STRICT_RESIDENCY_REGIONS", "eu")
# Another region's orders go to the public pool when their region has no live worker, or this many messages wait
# in its queue: the backlog at which the orders pool's autoscaler adds a pod (1800 messages per pod, 15 to 30 s of
# one pod's work: docs/autoscaling.md), so a region falls back only when it is at least that far behind.
PUBLIC_FALLBACK_BACKLOG = env_int("PUBLIC_FALLBACK_BACKLOG", 1800)
# What already waits in such a region's queue moves to the public pool once the region has had no live worker this
# long: past a rolling restart's gap (a worker's soft shutdown, 25 s), before customers notice.
PUBLIC_FALLBACK_AFTER_SECONDS = env_float("PUBLIC_FALLBACK_AFTER_SECONDS", 30.0)
# The region whose queue a worker started without --queues consumes (`public`: the public pool's); unset, it
# consumes every queue it is not told to exclude (one site processing every region, as `make run`).
WORKER_REGION = os.environ.get("WORKER_REGION", "")
for _region in (*STRICT_RESIDENCY_REGIONS, *([WORKER_REGION] if WORKER_REGION not in ("", "public") else [])):
    if _region not in ORDER_REGIONS:
        raise ImproperlyConfigured(f"{_region!r} is no region of ORDER_REGIONS ({', '.join(ORDER_REGIONS)}).")
# More than this many units of one product, or items in one order, is a typo or abuse, not a purchase.
ORDER_MAX_QUANTITY_PER_ITEM = env_int("ORDER_MAX_QUANTITY_PER_ITEM", 100)
ORDER_MAX_ITEMS = env_int("ORDER_MAX_ITEMS", 50)
# The reconcilers' thresholds. A dead worker's messages come back within seconds (the registry's reaper); what
# these catch is a message lost outright (kombu pops it before recording it; Redis losing its data). Each is above
# the longest silence of work still in hand: a retry's backoff (TASK_MAX_DELAY_SECONDS, 300 s) + its hard time
# limit (90 s) + the reaper's bound (15 s) = 405 s; 480 leaves a margin, so a message still coming is not doubled.
# An order with no activity (placement, a transition, a retry starting) this long: scheduled again.
ORDER_STUCK_AFTER_SECONDS = env_int("ORDER_STUCK_AFTER_SECONDS", 8 * 60)
# A final order's notification neither sent nor being sent this long after: sent again.
NOTIFICATION_MISSING_AFTER_SECONDS = env_int("NOTIFICATION_MISSING_AFTER_SECONDS", 8 * 60)
# How far back it looks (orders that became final within this long): bounds its query, leaves a day to recover.
NOTIFICATION_RECONCILE_WINDOW_SECONDS = env_int("NOTIFICATION_RECONCILE_WINDOW_SECONDS", 24 * 60 * 60)

# The payment adapter (orders/payments.py): the sandbox until a real provider is plugged in.
PAYMENT_GATEWAY = os.environ.get("PAYMENT_GATEWAY", "orders.payments.SandboxGateway")
# The sandbox keeps its ledger of charges in Redis, outside our database transactions, as a real provider would.
PAYMENT_SANDBOX_REDIS_URL = os.environ.get("PAYMENT_SANDBOX_REDIS_URL", "redis://127.0.0.1:6379/2")
# A slow or flaky network for benchmarks and fault tests; none by default.
PAYMENT_SANDBOX_LATENCY_MS = env_int("PAYMENT_SANDBOX_LATENCY_MS", 0)
PAYMENT_SANDBOX_FAILURE_RATE = env_float("PAYMENT_SANDBOX_FAILURE_RATE", 0.0)
# How often `tok_timeout` times out before it answers: enough for the storefront to show a retry.
PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS = env_int("PAYMENT_SANDBOX_TIMEOUTS_BEFORE_SUCCESS", 2)

# --- Outbox --------------------------------------------------------------------------------------------------------

# A task row still unsent this long after its commit missed the fast path (process died, Redis unreachable).
OUTBOX_RELAY_AFTER_SECONDS = env_int("OUTBOX_RELAY_AFTER_SECONDS", 10)
# How often beat runs the relay; events for analytics wait at most about this long.
OUTBOX_RELAY_INTERVAL_SECONDS = env_float("OUTBOX_RELAY_INTERVAL_SECONDS", 2.0)
# Rows per relay transaction: one batch message of events stays well under a megabyte. A run relays batch after
# batch while they are full, for up to OUTBOX_RELAY_INTERVAL_SECONDS (jobs/outbox.py).
OUTBOX_RELAY_BATCH_SIZE = env_int("OUTBOX_RELAY_BATCH_SIZE", 500)
# The tasks that receive batches of events, each confirming them under its own name once handled
# (jobs.base.EventConsumerTask). The export joins them by itself when it has a function (below), and only then.
OUTBOX_EVENT_CONSUMERS = env_list("OUTBOX_EVENT_CONSUMERS", "analytics.track_events")
# Events sent this long ago that no consumer confirmed were lost with their batch: sent again (the reconcilers'
# threshold above, for the same reason).
OUTBOX_EVENT_REDELIVER_AFTER_SECONDS = env_int("OUTBOX_EVENT_REDELIVER_AFTER_SECONDS", 8 * 60)

# --- Export of events to a serverless function (exports/, README "Order events to a serverless function") -------

# The AWS Lambda function that receives the batches (invoked asynchronously): a name, a name:alias or an ARN. Empty
# turns the export off: it is then no consumer of the outbox, so it receives nothing and holds nothing back.
# Credentials come from AWS's usual chain (environment, ~/.aws, the pod's or instance's role), never from here.
EXPORT_LAMBDA_FUNCTION_NAME = os.environ.get("EXPORT_LAMBDA_FUNCTION_NAME", "")
# The function's region; empty leaves it to the same chain (AWS_DEFAULT_REGION, ~/.aws/config; `manage.py check` fails
# when neither knows one).
EXPORT_LAMBDA_REGION = os.environ.get("EXPORT_LAMBDA_REGION", "")
# Lambda takes at most 1 MB in an asynchronous invocation: each Invoke body (the JSON we send) stays at or below
# this many bytes, 1,000,000, under the limit however a megabyte is counted.
EXPORT_MAX_PAYLOAD_BYTES = env_int("EXPORT_MAX_PAYLOAD_BYTES", 1_000_000)
# An asynchronous Invoke only queues the event, so Lambda answers in milliseconds: a longer wait is a network
# fault, retried as one. Well below CELERY_TASK_SOFT_TIME_LIMIT, for a batch that needs several invocations.
EXPORT_CONNECT_TIMEOUT_SECONDS = env_float("EXPORT_CONNECT_TIMEOUT_SECONDS", 2.0)
EXPORT_READ_TIMEOUT_SECONDS = env_float("EXPORT_READ_TIMEOUT_SECONDS", 10.0)
# The export's task is a consumer of the outbox's events exactly when it has a function to send them to.
OUTBOX_EVENT_CONSUMERS = [consumer for consumer in OUTBOX_EVENT_CONSUMERS if consumer != "exports.export_events"]
if EXPORT_LAMBDA_FUNCTION_NAME:
    OUTBOX_EVENT_CONSUMERS.append("exports.export_events")

# --- Celery --------------------------------------------------------------------------------------------------------
# Read by proj/celery.py through config_from_object(namespace="CELERY"); the settings without that prefix are ours.

# The broker; the rate limiter defaults to it too (its keys are prefixed).
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
# kombu's Redis transport, recording which worker holds each message it reserves (jobs/broker.py, jobs/registry.py).
CELERY_BROKER_TRANSPORT = "jobs.broker:Transport"
# Results live in PostgreSQL (django-celery-results), so they survive a Redis restart and show in the admin.
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "django-db")
# Nobody waits on our tasks' return values (an order's status is its result), and storing one costs a database
# round trip or three per task. Failures are still stored, with their traceback, for ops.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED = True
# Stores task name, args, kwargs and worker with each result: ops can see what ran where.
CELERY_RESULT_EXTENDED = True
# A database blip while storing a result retries instead of failing an otherwise finished task.
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
# No expiry, so beat installs no `celery.backend_cleanup` of its own: `prune` (PRUNE_RETENTION_DAYS) is the one place
# that decides how long results are kept.
CELERY_RESULT_EXPIRES = None
# With the retries above, about a minute of database outage before a result is given up on.
CELERY_RESULT_BACKEND_MAX_RETRIES = 10

# JSON only: pickle would let anyone who can write to Redis run code in our workers.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# Acknowledge after the task ran, and requeue when its process dies: a task killed mid-way runs again rather than
# vanishing. Every task is idempotent, so running twice is harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# With late acks, each process holds one message at a time: a busy process does not sit on work others could do,
# and a killed worker takes at most one message per process down with it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# Time limits: a task over the soft limit gets SoftTimeLimitExceeded (and retries); the hard limit kills it.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90)
# The longest delay any task may ask for (countdown, retry backoff); a test keeps it below the visibility timeout.
TASK_MAX_DELAY_SECONDS = env_int("TASK_MAX_DELAY_SECONDS", 300)
# Redis redelivers an unacknowledged message after this long: above the longest countdown, backoff and hard time
# limit, or a task still waiting or running is delivered twice (tests/test_celery_config.py checks the bound).
BROKER_VISIBILITY_TIMEOUT_SECONDS = env_int("BROKER_VISIBILITY_TIMEOUT_SECONDS", 600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": BROKER_VISIBILITY_TIMEOUT_SECONDS,
    # Sweep for messages past the visibility timeout every ~30 s instead of kombu's default of ~100 s.
    "unacked_restore_interval": env_int("BROKER_UNACKED_RESTORE_INTERVAL_SECONDS", 10),
    "unacked_restore_throttle": env_int("BROKER_UNACKED_RESTORE_THROTTLE", 3),
    # A broker that vanished without closing the TCP connection must not hang a publish forever.
    "socket_timeout": env_float("BROKER_SOCKET_TIMEOUT_SECONDS", 5.0),
    "socket_connect_timeout": env_float("BROKER_CONNECT_TIMEOUT_SECONDS", 2.0),
}
# Same options for a Redis result backend, should CELERY_RESULT_BACKEND point to one.
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = CELERY_BROKER_TRANSPORT_OPTIONS
# Publishing happens right after a commit, often inside a web request: give up quickly (the outbox relay sends
# the message later) rather than keep the customer waiting while Redis is down.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# Each of those 3 attempts waits at most this long for Redis (publishing connections only, proj/celery.py): a
# hung Redis holds a request about 1.7 s (tests/faults/test_broker_down.py); consumers keep the socket timeout.
BROKER_PUBLISH_TIMEOUT_SECONDS = env_float("BROKER_PUBLISH_TIMEOUT_SECONDS", 0.5)
# On losing the broker connection, stop running tasks instead of finishing them: their messages are unacked and
# will be redelivered, and an ack sent on a new connection would be rejected anyway.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# With REMAP_SIGTERM=SIGQUIT, SIGTERM gives running tasks this long to finish before their messages are requeued
# (tests/faults/test_rolling_restart.py). Whatever stops workers must wait longer (compose's stop_grace_period).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 25.0)
# Workers and beat started before Redis keep retrying instead of exiting (startup order does not matter).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Task events feed Flower and the worker-side metrics.
CELERY_WORKER_SEND_TASK_EVENTS = True
# No `task-sent` event: it would be a second Redis publish for every message, paid inside web requests, and Flower
# lists a task from its `task-received` event a moment later anyway (docs/benchmarks.md measures the cost).
CELERY_TASK_SEND_SENT_EVENT = False
# Queues are declared in jobs/routing.py; a task without a route would land on a queue nobody consumes.
CELERY_TASK_CREATE_MISSING_QUEUES = False
# Where a task the router does not know goes (every one of ours has a route: tests/test_celery_config.py).
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
# Celery closes the database connection around every task unless told to reuse it; reconnecting costs more than
# the task. Our own task_prerun hook drops connections that are broken or older than CONN_MAX_AGE instead.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1_000_000)
# Periodic tasks live in the database (django-celery-beat), editable in the admin; CELERY_BEAT_SCHEDULE seeds them.
# Behind a PostgreSQL advisory lock (jobs/beat.py): a second beat waits instead of sending every entry twice.
CELERY_BEAT_SCHEDULER = "jobs.beat:LockedDatabaseScheduler"
# Crontab entries (the daily prune at 03:30) are read in UTC, as every timestamp we store.
CELERY_TIMEZONE = TIME_ZONE
# Queues and the router live in jobs/routing.py: one place decides where every task goes.
CELERY_TASK_QUEUES = routing.declared_queues(ORDER_REGIONS)
CELERY_TASK_ROUTES = (routing.route_task,)
# Option `expire_seconds`, not Celery's `expires`: the DatabaseScheduler stores only the former (a PeriodicTask column)
# and silently drops the latter, so ticks queued while no worker ran would never expire (tests/ops/test_beat.py).
CELERY_BEAT_SCHEDULE = {
    "relay-outbox": {
        "task": "jobs.relay_outbox",
        "schedule": OUTBOX_RELAY_INTERVAL_SECONDS,
        # Ticks that could not run while workers were down are worthless later: the next tick does their work.
        "options": {"expire_seconds": 60},
    },
    "reconcile-stuck-orders": {
        "task": "orders.reconcile_stuck_orders",
        "schedule": env_float("ORDER_RECONCILE_INTERVAL_SECONDS", 60.0),
        "options": {"expire_seconds": 300},
    },
    "reconcile-notifications": {
        "task": "orders.reconcile_notifications",
        "schedule": env_float("NOTIFICATION_RECONCILE_INTERVAL_SECONDS", 300.0),
        "options": {"expire_seconds": 300},
    },
    "prune-history": {
        "task": "jobs.prune_history",
        # Daily, at a quiet hour (UTC): deletes in batches, but there is no reason to compete with peak traffic.
        "schedule": crontab(hour=3, minute=30),
        "options": {"expire_seconds": 300},
    },
    # Idempotency keys past IDEMPOTENCY_KEY_TTL_SECONDS, hourly: the one schedule that prunes them (a key past
    # its TTL is ignored, and replaced, even before it is pruned).
    "prune-idempotency-keys": {
        "task": "orders.prune_idempotency_keys",
        "schedule": 60.0 * 60,
        "options": {"expire_seconds": 300},
    },
}

# --- Product images and their thumbnails (README "Offloading") ---------------------------------------------------

# Uploaded product images and the thumbnails the heavy pool makes, in Django's default storage. Web and the heavy
# workers must see the same files: this directory on one machine, shared storage in production (README).
MEDIA_ROOT = str(BASE_DIR / os.environ.get("MEDIA_ROOT", "var/media"))
MEDIA_URL = os.environ.get("MEDIA_URL", "/media/")
# The sandbox's limits; core/sandbox.py derives each default from the measurements in wasm/thumbnail/README.md.
# Instructions per thumbnail: twice the cost of an image at the pixel limit; a runaway module stops after ~2.5 s.
THUMBNAIL_FUEL_LIMIT = env_int("THUMBNAIL_FUEL_LIMIT", 50_000_000_000)
# The module's linear memory: a JPEG at the pixel limit peaks at ~190 MiB; bounds what one image takes from a node.
THUMBNAIL_MEMORY_LIMIT_BYTES = env_int("THUMBNAIL_MEMORY_LIMIT_BYTES", 256 * 1024 * 1024)
# Wall clock per call: six times the slowest image at the pixel limit. Celery's soft time limit cannot interrupt a
# call inside wasm, so the sandbox must stop it first: refused below unless it is under the soft time limit.
THUMBNAIL_DEADLINE_SECONDS = env_float("THUMBNAIL_DEADLINE_SECONDS", 10.0)
# Checked before decoding. A 24-megapixel JPEG at quality 95 is ~12 MB; the input is copied into the module's memory.
THUMBNAIL_MAX_INPUT_BYTES = env_int("THUMBNAIL_MAX_INPUT_BYTES", 32 * 1024 * 1024)
# As the image's header declares them: a 24-megapixel camera with room to spare; a decompression bomb is refused.
THUMBNAIL_MAX_INPUT_PIXELS = env_int("THUMBNAIL_MAX_INPUT_PIXELS", 25_000_000)
# The module bin/build-wasm builds (a build output, not in git); relative paths are from the project's directory.
THUMBNAIL_WASM_PATH = str(BASE_DIR / os.environ.get("THUMBNAIL_WASM_PATH", "var/wasm/thumbnail.wasm"))
if THUMBNAIL_DEADLINE_SECONDS >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"THUMBNAIL_DEADLINE_SECONDS ({THUMBNAIL_DEADLINE_SECONDS:g}) must be below CELERY_TASK_SOFT_TIME_LIMIT "
        f"({CELERY_TASK_SOFT_TIME_LIMIT}): the soft time limit cannot stop a call inside the sandbox."
    )

# --- Web: JSON API and storefront --------------------------------------------------------------------------------

# Larger request bodies are refused (413) before they are read; an order of ORDER_MAX_ITEMS items is a few KiB.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 64 * 1024)
# A response stored for an Idempotency-Key is replayed to retries for this long, then pruned (as Stripe does).
IDEMPOTENCY_KEY_TTL_SECONDS = env_int("IDEMPOTENCY_KEY_TTL_SECONDS", 24 * 60 * 60)
# Rate limits per client (IP address), counted in Redis: scope -> (requests, window in seconds). `place_order`
# counts orders placed through the API and the storefront together.
RATE_LIMITS = {
    "place_order": (env_int("ORDER_RATE_LIMIT", 20), env_int("ORDER_RATE_LIMIT_WINDOW_SECONDS", 60)),
}
RATE_LIMIT_REDIS_URL = os.environ.get("RATE_LIMIT_REDIS_URL", REDIS_URL)
# The counters are namespaced by this prefix, so they can share a Redis database with the broker.
RATE_LIMIT_KEY_PREFIX = os.environ.get("RATE_LIMIT_KEY_PREFIX", "ratelimit:")
# How many reverse proxies in front of the app append to X-Forwarded-For; 0 trusts only the socket's address.
# Set it to exactly the number of proxies: a larger number lets clients choose their own rate-limit identity.
RATE_LIMIT_TRUSTED_PROXIES = env_int("RATE_LIMIT_TRUSTED_PROXIES", 0)

# --- Operations: retention, worker probes and metrics, Flower (README "Operating it") ---------------------------

# Task results, sent outbox rows and delivery counts older than this are deleted by `prune` (daily beat task):
# django-celery-results' table otherwise grows by one row per task forever.
PRUNE_RETENTION_DAYS = env_int("PRUNE_RETENTION_DAYS", 30)
# What `prune` deletes: a label and a function `(*, older_than: timedelta) -> int` (rows deleted). Idempotency keys
# are not history: they have a time to live of their own, pruned hourly (prune-idempotency-keys).
PRUNE_TARGETS = {
    "task results": "jobs.pruning.prune_task_results",
    "sent outbox messages": "jobs.pruning.prune_sent_outbox_messages",
    "task deliveries": "jobs.pruning.prune_task_deliveries",
}
# Rows per DELETE statement: short transactions, so pruning never holds locks that orders wait for.
PRUNE_BATCH_SIZE = env_int("PRUNE_BATCH_SIZE", 5000)

# The worker's probe files (ops/probes.py); empty turns the probes off (tests, shells). In Kubernetes an emptyDir.
WORKER_PROBE_DIR = os.environ.get("WORKER_PROBE_DIR", "")
# How often the worker's event loop heartbeats (the probe file, the registry) and reaps dead workers' messages.
WORKER_HEARTBEAT_INTERVAL_SECONDS = env_float("WORKER_HEARTBEAT_INTERVAL_SECONDS", 2.0)
# A worker unheard of for this long is dead, and its messages go back to their queues: four heartbeats missed, so a
# busy loop or a GC pause is not death; with the interval above, a dead worker's work is back within ~10 s.
WORKER_REGISTRY_TTL_SECONDS = env_float("WORKER_REGISTRY_TTL_SECONDS", 8.0)
# How long a dead worker stays listed (celery_worker_up 0, for the alerts) before the registry forgets it.
WORKER_REGISTRY_FORGET_AFTER_SECONDS = env_float("WORKER_REGISTRY_FORGET_AFTER_SECONDS", 600.0)
# Port on which each worker serves its task metrics (ops/task_metrics.py); 0 turns it off. 9808 is celery-exporter's.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
WORKER_METRICS_ADDRESS = os.environ.get("WORKER_METRICS_ADDRESS", "0.0.0.0")  # noqa: S104 - scraped from the pod network
# Where the worker's processes write their metrics (emptied at start); empty: a new temporary directory.
WORKER_METRICS_DIR = os.environ.get("WORKER_METRICS_DIR", "")

# Flower reads FLOWER_BASIC_AUTH (user:password[,...]) itself; proj/flowerconfig.py refuses to start without it in
# production.
FLOWER_BASIC_AUTH = os.environ.get("FLOWER_BASIC_AUTH", "")

# The housekeeping whose idle runs stay out of the log (core.logging.QuietHousekeepingFilter): every beat entry.
LOGGING["filters"]["quiet_housekeeping"]["task_names"] = [entry["task"] for entry in CELERY_BEAT_SCHEDULE.values()]
