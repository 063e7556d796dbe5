"""The article's trigger: every new Order schedules its processing once the transaction commits."""

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from bench.naive.tasks import process_order
from orders.models import Order


@receiver(post_save, sender=Order)
def schedule_processing(sender, instance: Order, created: bool, **kwargs) -> None:
    if created:
        # If the process dies or Redis is down right after the commit, this order is never processed.
        transaction.on_commit(lambda: process_order.delay(str(instance.id)))
