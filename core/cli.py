"""What the project's `manage.py` commands share: reading moments and durations from the command line."""

import re
from datetime import UTC, datetime, timedelta

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

RELATIVE_MOMENT = re.compile(r"^(?P<amount>\d+)(?P<unit>[mhd])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}
SINCE_HELP = "a moment: 30m, 6h or 7d ago, or an ISO date or date-time such as 2026-11-27 or 2026-11-27T09:00"


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """An aware datetime from `30m`, `6h`, `7d` (ago), an ISO date (midnight UTC) or an ISO date-time (UTC if naive).

    Raises CommandError, with what is accepted, for anything else.
    """
    value = value.strip()
    if match := RELATIVE_MOMENT.match(value):
        now = now or timezone.now()
        return now - timedelta(**{UNITS[match["unit"]]: int(match["amount"])})
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"--since {value!r} is not {SINCE_HELP}.")
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)
