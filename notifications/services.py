"""Sending notifications: at most one per (order, channel, kind) in effect, whatever the number of deliveries.

A worker process claims the notification row before sending and marks it sent afterwards. If it dies in between,
its message comes back (the worker registry reaps it within seconds) and the next delivery takes the claim over at
once, as soon as the registry says the claimer's worker is gone (or, on the same worker, its process); a claim
whose claimer cannot be told dead waits until it is stale. A process that died after sending and before marking
leads to a second send: email and push are at-least-once, and the email's Message-ID is stable so mail clients
can recognise the duplicate.
"""

import logging
import os
import smtplib

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.db.models.functions import Now
from django.template.loader import render_to_string

from jobs import selectors as job_selectors
from jobs.outbox import event_message, publish_on_commit
from notifications.exceptions import ChannelUnavailable, NotificationBusy, RecipientRefused
from notifications.models import Notification

logger = logging.getLogger(__name__)

Status = Notification.Status

# A claim younger than this belongs to a live worker, so it must outlast the hard time limit of the task;
# an older one was left by a worker that died, and another worker takes over.
CLAIM_STALE_AFTER_SECONDS = settings.CELERY_TASK_TIME_LIMIT + 30


def send_notification(
    *, order_id: str, channel: str, kind: str, recipient: str, context: dict, claimer: str = ""
) -> str:
    """Send the notification unless it was sent already; return its final status.

    `claimer` names the process sending, `celery@host:pid` (the task passes it), so that its claim can be taken
    over as soon as that process is known to be gone.
    """
    notification_id = _claim(order_id=order_id, channel=channel, kind=kind, recipient=recipient, claimer=claimer)
    if notification_id is None:
        notification_id = _take_over_if_claimer_gone(order_id=order_id, channel=channel, kind=kind, claimer=claimer)
    if notification_id is None:
        status = (
            Notification.objects.filter(order_id=order_id, channel=channel, kind=kind)
            .values_list("status", flat=True)
            .get()
        )
        if status in (Status.SENT, Status.SKIPPED):
            return status
        raise NotificationBusy(
            f"Notification {kind} by {channel} for order {order_id} is being sent by another worker."
        )

    if channel == Notification.Channel.PUSH and not settings.PUSH_URL:
        Notification.objects.filter(pk=notification_id).update(
            status=Status.SKIPPED, claimed_at=None, last_error="No push server configured (PUSH_URL)."
        )
        return Status.SKIPPED
    try:
        _deliver(channel=channel, kind=kind, recipient=recipient, context=context)
    except RecipientRefused as refused:
        Notification.objects.filter(pk=notification_id).update(
            status=Status.FAILED, claimed_at=None, last_error=str(refused)
        )
        return Status.FAILED
    except ChannelUnavailable as error:
        # Release the claim at once, so the retry does not have to wait for it to go stale.
        Notification.objects.filter(pk=notification_id).update(claimed_at=None, last_error=str(error))
        raise
    with transaction.atomic():
        Notification.objects.filter(pk=notification_id).update(
            status=Status.SENT, sent_at=Now(), claimed_at=None, last_error=""
        )
        publish_on_commit(event_message("notification_sent", order_id=order_id, channel=channel, kind=kind))
    return Status.SENT


def record_failure(*, order_id: str, channel: str, kind: str, reason: str) -> None:
    """Mark a notification failed for good (the task gave up); a replay may still send it later."""
    Notification.objects.filter(order_id=order_id, channel=channel, kind=kind).exclude(status=Status.SENT).update(
        status=Status.FAILED, claimed_at=None, last_error=reason
    )


def _claim(*, order_id: str, channel: str, kind: str, recipient: str, claimer: str) -> int | None:
    """Create or take over the notification row for sending; None when it is sent, skipped or freshly claimed."""
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} AS n (order_id, channel, kind, recipient, status, attempts, last_error, claimed_at,
                                      claimed_by, created_at)
            VALUES (%s, %s, %s, %s, 'sending', 1, '', now(), %s, now())
            ON CONFLICT (order_id, channel, kind) DO UPDATE
            SET status = 'sending', attempts = n.attempts + 1, claimed_at = now(), claimed_by = EXCLUDED.claimed_by
            WHERE n.status NOT IN ('sent', 'skipped')
              AND (n.claimed_at IS NULL OR n.claimed_at < now() - make_interval(secs => %s))
            RETURNING id
            """,  # noqa: S608 - the table name is ours, the values are parameters
            [order_id, channel, kind, recipient, claimer, CLAIM_STALE_AFTER_SECONDS],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _take_over_if_claimer_gone(*, order_id: str, channel: str, kind: str, claimer: str) -> int | None:
    """Take over a fresh claim whose claimer is gone; None when there is none, or its claimer may be alive."""
    claim = (
        Notification.objects.filter(order_id=order_id, channel=channel, kind=kind, status=Status.SENDING)
        .exclude(claimed_at=None)
        .values_list("pk", "claimed_by")
        .first()
    )
    if claim is None or not _is_gone(claim[1], asking=claimer):
        return None
    taken = Notification.objects.filter(pk=claim[0], status=Status.SENDING, claimed_by=claim[1]).update(
        claimed_at=Now(), claimed_by=claimer
    )
    if taken:
        logger.warning("Took over notification %s claimed by %s, which is gone", claim[0], claim[1])
    return claim[0] if taken else None


def _is_gone(claimed_by: str, *, asking: str) -> bool:
    """Whether the process that claimed (`celery@host:pid`) is known to be gone: its worker stopped heartbeating,
    or, on the asking process's own worker, that pid no longer runs. Unknown (no name, no registry) is not gone."""
    worker, _, pid = claimed_by.rpartition(":")
    if not worker or not pid.isdigit():
        return False
    if worker == asking.rpartition(":")[0]:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return not job_selectors.is_worker_alive(worker)


def _deliver(*, channel: str, kind: str, recipient: str, context: dict) -> None:
    subject = render_to_string(f"notifications/{kind}_subject.txt", context).strip()
    body = render_to_string(f"notifications/{kind}.txt", context)
    if channel == Notification.Channel.EMAIL:
        _send_email(subject=subject, body=body, recipient=recipient, message_id=f"{context['order_id']}.{kind}")
    elif channel == Notification.Channel.PUSH:
        _send_push(title=subject, body=body, topic=recipient)
    else:
        raise ValueError(f"Unknown notification channel {channel!r}.")


def _send_email(*, subject: str, body: str, recipient: str, message_id: str) -> None:
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost"
    message = EmailMessage(
        subject=subject, body=body, to=[recipient], headers={"Message-ID": f"<{message_id}@{domain}>"}
    )
    try:
        message.send()
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as error:
        raise RecipientRefused(f"The mail server refused the message: {error}") from error
    except (smtplib.SMTPException, OSError) as error:
        raise ChannelUnavailable(f"The mail server is unavailable: {error}") from error


def _send_push(*, title: str, body: str, topic: str) -> None:
    try:
        response = requests.post(
            f"{settings.PUSH_URL.rstrip('/')}/{topic}",
            data=body.encode(),
            headers={"Title": title},
            timeout=settings.PUSH_TIMEOUT_SECONDS,
        )
    except requests.RequestException as error:
        raise ChannelUnavailable(f"The push server is unreachable: {error}") from error
    if response.status_code >= 500 or response.status_code == 429:
        raise ChannelUnavailable(f"The push server answered {response.status_code}.")
    if response.status_code >= 400:
        raise RecipientRefused(f"The push server refused the message: {response.status_code} {response.text[:200]}")
