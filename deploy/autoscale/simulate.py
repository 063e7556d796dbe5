"""`simulate`: replay an HPA manifest against a CSV of metric totals, one controller sync per row."""

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TextIO

from deploy.autoscale.controller import HorizontalController
from deploy.autoscale.hpa import AutoscalerSpec
from deploy.autoscale.quantity import InvalidQuantity, to_milli

TRACE_HEADER = ["seconds", "value"]
OUTPUT_HEADER = ["seconds", "value", "replicas"]


class InvalidTrace(ValueError):
    """Raised for a trace that is not `seconds,value` rows in increasing time."""


@dataclass(frozen=True)
class Sync:
    seconds: str  # as written in the trace, so the output repeats it exactly
    value: str  # empty: the metrics API returned no value at this sync
    at: Decimal
    metric_total_milli: int | None


def read_trace(lines: Iterable[str]) -> list[Sync]:
    """Parse a `seconds,value` CSV; times strictly increase, a value is a quantity or empty."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header != TRACE_HEADER:
        raise InvalidTrace(f"the trace's header must be {','.join(TRACE_HEADER)!r}, not {header!r}")
    syncs: list[Sync] = []
    for line_number, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(TRACE_HEADER):
            raise InvalidTrace(f"line {line_number}: expected 2 cells, got {len(row)}")
        seconds, value = (cell.strip() for cell in row)
        try:
            at = Decimal(seconds)
            milli = to_milli(value) if value else None
        except (InvalidOperation, InvalidQuantity) as error:
            raise InvalidTrace(f"line {line_number}: {error}") from error
        if syncs and at <= syncs[-1].at:
            raise InvalidTrace(f"line {line_number}: seconds {seconds} is not after {syncs[-1].seconds}")
        syncs.append(Sync(seconds=seconds, value=value, at=at, metric_total_milli=milli))
    return syncs


def replay(
    *, spec: AutoscalerSpec, syncs: Iterable[Sync], initial_replicas: int, controller: HorizontalController
) -> Iterator[tuple[Sync, int]]:
    """Each sync with the replicas after it; pods are ready at once, so the next sync sees them all."""
    replicas = initial_replicas
    for sync in syncs:
        replicas = controller.sync(
            spec=spec, now=sync.at, current_replicas=replicas, metric_total_milli=sync.metric_total_milli
        ).replicas
        yield sync, replicas


def write_replay(results: Iterable[tuple[Sync, int]], output: TextIO) -> None:
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(OUTPUT_HEADER)
    for sync, replicas in results:
        writer.writerow([sync.seconds, sync.value, replicas])
