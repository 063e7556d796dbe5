"""What the project's `manage.py` commands share: reading moments from the command line, running over many rows."""

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from core.bulk import BulkOutcome, apply_to_each
from core.errors import ApplicationError

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


def run_for_each_with_progress[Item](
    command: BaseCommand,
    items: Sequence[Item],
    service: Callable[[Item], object],
    *,
    verb: str,
    noun: str,
    label: Callable[[Item], object] = str,
) -> BulkOutcome[Item]:
    """Apply `service` to each item with a progress line (`retried 3/10`), each refusal on stderr, and a summary.

    `verb` is the past tense of what the service does ("retried"), `noun` what it is done to ("order(s)").
    """
    total = len(items)

    def report(outcome: BulkOutcome[Item], index: int, item: Item, refusal: ApplicationError | None) -> None:
        if refusal is not None:
            # Done or moved on by someone else meanwhile.
            command.stderr.write(f"skipped {label(item)}: {refusal.message}")
        command.stdout.write(f"{verb} {outcome.done}/{total}", ending="\r" if index < total else "\n")

    outcome = apply_to_each(items, service, on_each=report)
    summary = f"{verb.capitalize()} {outcome.done} {noun}; skipped {len(outcome.skipped)}."
    command.stdout.write(command.style.SUCCESS(summary))
    return outcome
