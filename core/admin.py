"""What every app's admin shares: rows that only services write are read-only, and actions call services."""

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from core.bulk import apply_to_each

# How many refusals an action lists by name before summing up the rest.
MAX_REFUSALS_SHOWN = 10


class ServiceOwnedModelAdmin(admin.ModelAdmin):
    """A table that services write: listed and shown read-only; changed only through actions that call services.

    The list keeps the change permission (actions require it); a single row is shown read-only; nothing is added
    or deleted here, and Django's bulk "delete selected" action is gone with the delete permission.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None and super().has_change_permission(request)


class ReadOnlyTabularInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


def run_service_for_each(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    service: Callable[[Model], object],
    *,
    done_message: str,
) -> None:
    """An admin action: call `service` for every selected row; report how many succeeded, and each refusal by row."""
    outcome = apply_to_each(list(queryset), service)
    if outcome.done:
        model_admin.message_user(request, done_message.format(count=outcome.done), messages.SUCCESS)
    if outcome.skipped:
        shown = "; ".join(f"{row}: {error.message}" for row, error in outcome.skipped[:MAX_REFUSALS_SHOWN])
        more = len(outcome.skipped) - MAX_REFUSALS_SHOWN
        suffix = f"; and {more} more" if more > 0 else ""
        model_admin.message_user(request, f"Skipped {len(outcome.skipped)}: {shown}{suffix}", messages.WARNING)
