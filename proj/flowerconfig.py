"""Flower's configuration file: `celery -A proj flower --conf=proj/flowerconfig.py`.

Flower reads its options from the environment itself: FLOWER_BASIC_AUTH (`user:password`, comma-separated for
several users), FLOWER_URL_PREFIX (to serve it under e.g. /flower behind a proxy), FLOWER_PORT. This file adds the
one rule Flower lacks: in production (DJANGO_DEBUG off) it refuses to start without credentials, because Flower
shows every task's arguments and can revoke tasks and shut workers down.

Flower executes this file and takes any top-level name that matches one of its options as that option, so the
names here start with an underscore.
"""

from django.conf import settings as _settings

if not _settings.DEBUG and not _settings.FLOWER_BASIC_AUTH:
    raise SystemExit(
        "Flower refuses to start without authentication in production (DJANGO_DEBUG is off): "
        "set FLOWER_BASIC_AUTH=user:password."
    )
