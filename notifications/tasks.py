import os
from typing import Any

from celery import shared_task

from jobs.base import ReliableTask
from notifications import services

# Callers name a notification's channel and kind by these (the task's wire values), never through the models.
from notifications.models import NotificationChannel, NotificationKind

__all__ = ["NotificationChannel", "NotificationKind", "send_notification_task"]


class SendNotificationTask(ReliableTask):
    def give_up(self, reason: str, /, **kwargs: Any) -> None:
        services.record_failure(
            order_id=kwargs["order_id"], channel=kwargs["channel"], kind=kwargs["kind"], reason=reason
        )


# Timeouts and connection errors (ChannelUnavailable, TimeoutError, ConnectionError) retry with exponential
# backoff and jitter, as ReliableTask declares; a refused recipient is final and recorded on the notification.
# `region` is the order's: the router sends the message by it, so the customer's address stays where the order's
# residency allows (jobs/routing.py); a message of an earlier release has none.
@shared_task(name="notifications.send_notification", base=SendNotificationTask, bind=True)
def send_notification_task(
    self, order_id: str, channel: str, kind: str, recipient: str, context: dict, region: str = ""
) -> str:
    claimer = f"{self.request.hostname}:{os.getpid()}"  # the process sending: its claim is taken over once it is gone
    return services.send_notification(
        order_id=order_id, channel=channel, kind=kind, recipient=recipient, context=context, claimer=claimer
    )
