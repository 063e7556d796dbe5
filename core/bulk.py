"""Applying a service to each of many rows, as ops surfaces do (admin actions, `retry_failed`, `replay_...`)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.errors import ApplicationError


@dataclass
class BulkOutcome[Item]:
    done: int = 0
    # Rows the service refused, with why (a domain error: already replayed, no longer failed, ...).
    skipped: list[tuple[Item, ApplicationError]] = field(default_factory=list)


def apply_to_each[Item](
    items: Sequence[Item],
    service: Callable[[Item], object],
    *,
    on_each: Callable[[BulkOutcome[Item], int, Item, ApplicationError | None], None] | None = None,
) -> BulkOutcome[Item]:
    """Call `service` for every item; count what it did, collect what it refused, report after each one.

    Each call is its own transaction (services own theirs), so one refused row does not undo the others; an
    unexpected error (a bug) stops the loop, as it should.
    """
    outcome: BulkOutcome[Item] = BulkOutcome()
    for index, item in enumerate(items, start=1):
        refusal = None
        try:
            service(item)
        except ApplicationError as error:
            refusal = error
            outcome.skipped.append((item, error))
        else:
            outcome.done += 1
        if on_each is not None:
            on_each(outcome, index, item, refusal)
    return outcome
