"""Order events handed to a serverless function in batches that fit its payload limit (README "Offloading").

One invocation's payload is the JSON object `{"version": 1, "events": [...]}`, each event as the outbox relay
delivers it: `{"event_id", "type", "occurred_at", "data"}`. Delivery is at least once (a retried batch, a batch the
relay sends again, Lambda's own duplicates), so the function drops an event whose `event_id` it has seen.
"""

import json
import logging
from dataclasses import dataclass

from exports.lambda_function import EventFunction, get_function
from jobs import dead_letters, outbox

logger = logging.getLogger(__name__)

# The export's task (exports/tasks.py): its name is its receipts' consumer and its dead letters' task.
EXPORT_TASK_NAME = "exports.export_events"
# Bumped when the payload changes in a way the function must know about; fields may be added without it.
PAYLOAD_VERSION = 1
_HEAD = b'{"version":%d,"events":[' % PAYLOAD_VERSION
_TAIL = b"]}"


@dataclass(frozen=True)
class Payload:
    body: bytes
    event_ids: list[str]


@dataclass(frozen=True)
class OversizedEvent:
    event: dict
    # The bytes of a payload holding this event alone.
    size: int


@dataclass(frozen=True)
class ExportReport:
    invocations: int
    events_sent: int
    events_dead_lettered: int


def export_events(*, events: list[dict]) -> ExportReport:
    """Send `events` to the function in as few invocations as its payload limit allows; dead-letter any event that
    alone exceeds it. A throttled or failing function raises FunctionUnavailable (retried), a refusal
    FunctionRefused (the batch is dead-lettered), as does ExportDisabled."""
    function: EventFunction = get_function()
    payloads, oversized = split_into_payloads(events=events, max_bytes=function.max_payload_bytes)
    for item in oversized:
        _dead_letter_oversized(item, max_bytes=function.max_payload_bytes)
    for payload in payloads:
        function.invoke_async(payload=payload.body)
    return ExportReport(
        invocations=len(payloads),
        events_sent=sum(len(payload.event_ids) for payload in payloads),
        events_dead_lettered=len(oversized),
    )


def split_into_payloads(*, events: list[dict], max_bytes: int) -> tuple[list[Payload], list[OversizedEvent]]:
    """The payloads for `events`, in order, each at most `max_bytes` bytes of JSON as sent; and the events that
    do not fit in a payload even alone."""
    envelope = len(_HEAD) + len(_TAIL)
    payloads: list[Payload] = []
    oversized: list[OversizedEvent] = []
    parts: list[bytes] = []
    ids: list[str] = []
    size = envelope
    for event in events:
        part = _encode(event)
        if envelope + len(part) > max_bytes:
            oversized.append(OversizedEvent(event=event, size=envelope + len(part)))
            continue
        if parts and size + 1 + len(part) > max_bytes:
            payloads.append(_payload(parts, ids))
            parts, ids, size = [], [], envelope
        size += len(part) + (1 if parts else 0)  # the comma between two events
        parts.append(part)
        ids.append(str(event["event_id"]))
    if parts:
        payloads.append(_payload(parts, ids))
    return payloads, oversized


def _encode(event: dict) -> bytes:
    # Compact UTF-8, as the function receives it: the size measured is the size sent.
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _payload(parts: list[bytes], ids: list[str]) -> Payload:
    return Payload(body=_HEAD + b",".join(parts) + _TAIL, event_ids=list(ids))


def _dead_letter_oversized(item: OversizedEvent, *, max_bytes: int) -> None:
    # Kept for ops under an id of its own (recording it again on a retry keeps one), and released from the export's
    # receipts: no retry or relay could ever send it.
    event_id = str(item.event["event_id"])
    reason = f"EventTooLarge: event {event_id} makes a payload of {item.size} bytes, over the limit of {max_bytes}."
    logger.error("Export dead-letters an event: %s", reason)
    dead_letters.record_dead_letter(
        task_id=f"{EXPORT_TASK_NAME}:oversized:{event_id}",
        task_name=EXPORT_TASK_NAME,
        args=[],
        kwargs={"events": [item.event]},
        reason=reason,
        attempts=1,
    )
    outbox.abandon_events(consumer=EXPORT_TASK_NAME, event_ids=[event_id])
