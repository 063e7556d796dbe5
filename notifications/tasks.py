from celery import shared_task

from jobs.base import ReliableTask
from notifications import services


class SendNotificationTask(ReliableTask):
    def give_up(self, reason: str, /, *, order_id: str, channel: str, kind: str, **_) -> None:
        services.record_failure(order_id=order_id, channel=channel, kind=kind, reason=reason)


# Timeouts and connection errors (ChannelUnavailable, TimeoutError, ConnectionError) retry with exponential
# backoff and jitter, as ReliableTask declares; a refused recipient is final and recorded on the notification.
@shared_task(name="notifications.send_notification", base=SendNotificationTask)
def send_notification_task(order_id: str, channel: str, kind: str, recipient: str, context: dict) -> str:
    return services.send_notification(
        order_id=order_id, channel=channel, kind=kind, recipient=recipient, context=context
    )
