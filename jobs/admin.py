"""The task pipeline in the admin: dead letters to replay or discard, the outbox and redelivery counts to inspect."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import truncatechars

from core.admin import ServiceOwnedModelAdmin, run_service_for_each
from jobs import dead_letters
from jobs.models import DeadLetter, OutboxMessage, TaskDelivery


@admin.register(DeadLetter)
class DeadLetterAdmin(ServiceOwnedModelAdmin):
    list_display = ["task_name", "task_id", "short_reason", "attempts", "created_at", "replayed_at"]
    list_filter = ["task_name", ("replayed_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["=task_id", "task_name", "reason"]
    date_hierarchy = "created_at"
    readonly_fields = ["task_id", "task_name", "args", "kwargs", "reason", "attempts", "created_at", "replayed_at"]
    actions = ["replay", "discard"]

    @admin.display(description="reason")
    def short_reason(self, dead_letter: DeadLetter) -> str:
        return truncatechars(dead_letter.reason, 80)

    @admin.action(description="Replay the selected dead letters", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        run_service_for_each(
            self,
            request,
            queryset,
            lambda dead_letter: dead_letters.replay_dead_letter(dead_letter_id=dead_letter.pk),
            done_message="Replayed {count} dead letter(s).",
        )

    @admin.action(description="Discard the selected dead letters (do not replay them)", permissions=["change"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        run_service_for_each(
            self,
            request,
            queryset,
            lambda dead_letter: dead_letters.discard_dead_letter(dead_letter_id=dead_letter.pk),
            done_message="Discarded {count} dead letter(s).",
        )


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ServiceOwnedModelAdmin):
    list_display = [
        "id",
        "kind",
        "name",
        "created_at",
        "sent_at",
        "awaiting_consumers",
        "publish_attempts",
        "short_error",
    ]
    list_filter = ["kind", ("sent_at", admin.EmptyFieldListFilter), "name", "created_at"]
    search_fields = ["=id", "name"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "id",
        "kind",
        "name",
        "payload",
        "created_at",
        "sent_at",
        "awaiting_consumers",
        "delivered_at",
        "publish_attempts",
        "last_error",
    ]
    ordering = ["-created_at"]

    @admin.display(description="last error")
    def short_error(self, message: OutboxMessage) -> str:
        return truncatechars(message.last_error, 80)


@admin.register(TaskDelivery)
class TaskDeliveryAdmin(ServiceOwnedModelAdmin):
    list_display = ["task_id", "task_name", "deliveries", "last_delivered_at"]
    list_filter = ["task_name"]
    search_fields = ["=task_id"]
    readonly_fields = ["task_id", "task_name", "deliveries", "last_delivered_at"]
    ordering = ["-last_delivered_at"]
