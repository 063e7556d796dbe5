"""Reads about notifications, for the apps that owe them (orders asks which of its notifications are settled)."""

from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from notifications.models import Notification
from notifications.services import CLAIM_STALE_AFTER_SECONDS

Status = Notification.Status


def settled_notifications(*, order_id, kind, channel) -> QuerySet[Notification]:
    """Notifications that need no sending again: sent, skipped or failed for good, or claimed by a live worker.

    The arguments may be values or expressions (`OuterRef("pk")`), so the caller can ask about many orders in one
    query, as `Exists(settled_notifications(order_id=OuterRef("pk"), ...))`.
    """
    live_claim_since = timezone.now() - timedelta(seconds=CLAIM_STALE_AFTER_SECONDS)
    return Notification.objects.filter(order_id=order_id, kind=kind, channel=channel).filter(
        Q(status__in=(Status.SENT, Status.SKIPPED, Status.FAILED)) | Q(claimed_at__gte=live_claim_since)
    )
