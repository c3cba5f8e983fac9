"""The operator console's own pages on the default admin site: the operations overview
at /admin/overview/ (URL name ``admin:overview``, linked from the index), and the
outbox's event deliveries, pending and failed first, with their attempt count and last
error and an action to retry them now.

The outbox is iaas.contracts' table, but its admin lives here, in the composition root:
the contracts import nothing of the project (not even iaas.common's admin helpers)."""

from __future__ import annotations

import json
from functools import partial

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.urls import path
from django.utils.html import format_html
from django.utils.text import Truncator

from iaas.common.admin import AlreadyDone, ReadOnlyAdmin, wallet_link
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage

from .admin_views import overview

admin.site.site_header = "IaaS billing · operator console"
admin.site.site_title = "IaaS operator console"
admin.site.index_title = "Operations"

_site_urls = admin.site.get_urls


def _get_urls():
    return [
        path("overview/", admin.site.admin_view(partial(overview, site=admin.site)), name="overview"),
        *_site_urls(),
    ]


admin.site.get_urls = _get_urls


# --- The outbox ----------------------------------------------------------------------------


class DeliveryFilter(admin.SimpleListFilter):
    """What needs an operator's eye first: undelivered rows, unless asked otherwise."""

    title = "delivery"
    parameter_name = "delivery"
    UNDELIVERED = None  # the default, no parameter

    def lookups(self, request, model_admin):
        return [
            ("all", "All"),
            ("pending", "Pending"),
            ("failed", "Failed (gave up retrying)"),
            ("done", "Delivered"),
        ]

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Undelivered (pending or failed)",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset.exclude(status=OutboxMessage.Status.DONE)
        if value == "all":
            return queryset
        return queryset.filter(status=value)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "event_type",
        "handler_name",
        "status",
        "attempts",
        "last_error_short",
        "created_at",
        "available_at",
        "wallet",
    )
    list_filter = (DeliveryFilter, "event_type", "handler", "created_at")
    search_fields = ("event_type", "handler", "event_id", "wallet_id", "last_error")
    search_help_text = "Event type, handler, event id, wallet id or error text."
    date_hierarchy = "created_at"
    ordering = ("-id",)
    readonly_fields = (
        "id",
        "event_id",
        "event_type",
        "handler_name",
        "status",
        "attempts",
        "last_error_text",
        "created_at",
        "available_at",
        "delivered_at",
        "wallet",
        "payload_json",
    )
    fields = readonly_fields
    actions = ("retry_deliveries",)
    object_actions = (("retry_deliveries", "Retry delivery now"),)

    def has_retry_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("contracts.retry_outboxmessage")

    @admin.display(description="handler", ordering="handler")
    def handler_name(self, obj):
        """An event no subscription takes is recorded all the same, delivered to nobody."""
        return obj.handler or "(no subscriber: recorded)"

    @admin.display(description="last error", ordering="last_error")
    def last_error_short(self, obj):
        return Truncator(obj.last_error.splitlines()[-1] if obj.last_error else "").chars(80)

    @admin.display(description="last error")
    def last_error_text(self, obj):
        return format_html("<pre>{}</pre>", obj.last_error) if obj.last_error else "-"

    @admin.display(description="payload")
    def payload_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    @admin.display(description="wallet", ordering="wallet_id")
    def wallet(self, obj):
        return wallet_link(obj.wallet_id, "wallet") if obj.wallet_id else "-"

    def first_submission(self, request, pk) -> bool:
        try:
            self.claim_submission(request, pk)
        except AlreadyDone:
            return False
        return True

    @admin.action(description="Retry delivery of the selected events now", permissions=["retry"])
    def retry_deliveries(self, request, queryset):
        ids = list(queryset.exclude(status=OutboxMessage.Status.DONE).values_list("pk", flat=True))
        if not ids:
            self.message_user(request, "Nothing to retry: the selected events were delivered.", messages.INFO)
            return self.back(request)
        if self.submission_token(request) is None:
            return self.back(request)
        # Once per submission and row: a resubmitted page does not retry again rows it
        # retried (they may have failed again since, for an operator to look at).
        with transaction.atomic():
            ids = [pk for pk in ids if self.first_submission(request, pk)]
            queued = bus.retry_failed(ids) if ids else 0
        if not ids:
            self.message_user(
                request,
                "Already retried by this form's first submission; nothing retried again.",
                messages.WARNING,
            )
            return self.back(request)
        report = bus.deliver_messages(ids)
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=list(OutboxMessage.objects.filter(pk__in=ids)),
            action_flag=CHANGE,
            change_message=f"Retried delivery (by {request.user.get_username()})",
        )
        level = messages.SUCCESS if report.failed == 0 else messages.WARNING
        self.message_user(
            request,
            f"Retried {queued}: {report.delivered} delivered, {report.failed} failed again "
            f"(see the last error), {queued - report.delivered - report.failed} left for the "
            "delivery worker.",
            level,
        )
        return self.back(request)
