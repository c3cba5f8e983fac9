"""The operator console's own pages on the default admin site: the operations overview
at /admin/overview/ (URL name ``admin:overview``, linked from the index), the outbox's
event deliveries, pending and failed first, with their attempt count and last error and
an action to retry them now, the runs of scheduled jobs, and the task messages the
broker dead-lettered, with actions to retry or discard them.

The outbox is iaas.contracts' table, but its admin lives here, in the composition root:
the contracts import nothing of the project (not even iaas.common's admin helpers)."""

from __future__ import annotations

import json
from functools import partial

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from iaas.common.admin import ReadOnlyAdmin, wallet_link
from iaas.contracts import bus
from iaas.contracts.models import InboxRecord, OutboxMessage

from . import dead_letters
from .admin_views import overview
from .models import DeadLetter, JobPart, JobRun

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


# --- The task engine: job runs, dead letters, consumers' inboxes ------------------------------


@admin.register(InboxRecord)
class InboxRecordAdmin(ReadOnlyAdmin):
    """What each consumer outside the money transaction applied, event by event (a relayed
    event that arrives again finds its record here and is not applied twice)."""

    list_display = ("id", "consumer", "event_id", "received_at")
    list_filter = ("consumer", "received_at")
    search_fields = ("consumer", "event_id")
    date_hierarchy = "received_at"
    ordering = ("-received_at", "-id")


class JobPartInline(admin.TabularInline):
    model = JobPart
    extra = 0
    can_delete = False
    fields = ("index", "status", "attempts", "worker", "started_at", "finished_at", "error_short", "outcome")
    readonly_fields = fields
    ordering = ("index",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="error")
    def error_short(self, obj):
        return Truncator(obj.error).chars(200) if obj.error else "-"

    @admin.display(description="summary")
    def outcome(self, obj):
        """The command's figures in a line (the non-zero counts), its whole JSON on a click."""
        if not obj.summary:
            return "-"
        counts = [
            f"{key.replace('_', ' ')} {value}"
            for key, value in obj.summary.items()
            if isinstance(value, int) and not isinstance(value, bool) and value
        ]
        return format_html(
            "<details><summary>{}</summary><pre>{}</pre></details>",
            ", ".join(counts) or "nothing to do",
            json.dumps(obj.summary, indent=2, sort_keys=True),
        )


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    """Each run of a scheduled job: when it started, for which moment, how its parts
    (one per wallet partition) went, and how long the whole run took."""

    list_display = ("id", "job", "status", "parts_done", "at", "started_at", "took", "started_by")
    list_filter = ("job", "status", "started_by", "started_at")
    search_fields = ("job", "request_id", "start_key")
    date_hierarchy = "started_at"
    ordering = ("-started_at", "-id")
    readonly_fields = (
        "id", "job", "status", "parts", "at", "started_at", "finished_at", "took", "started_by",
        "start_key", "request_id",
    )  # fmt: skip
    fields = readonly_fields
    inlines = (JobPartInline,)

    @admin.display(description="parts done")
    def parts_done(self, obj):
        done = obj.part_set.filter(status__in=[JobPart.Status.SUCCEEDED, JobPart.Status.PROBLEMS]).count()
        return f"{done} / {obj.parts}"

    @admin.display(description="took")
    def took(self, obj):
        duration = obj.duration
        return f"{duration.total_seconds():.1f} s" if duration is not None else "-"


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    """Task messages the broker gave up on, waiting for an operator: retry publishes one
    again, as it was, to the queue it came from (every task is safe to run again);
    discard closes it."""

    list_display = (
        "id",
        "call",
        "queue",
        "reason",
        "deaths",
        "dead_at",
        "status",
        "times_retried",
        "handled_by",
    )
    list_filter = ("status", "reason", "queue", "task", "dead_at")
    search_fields = ("message_id", "task", "body")
    search_help_text = "Message id, task name or arguments."
    date_hierarchy = "dead_at"
    ordering = ("-dead_at", "-id")
    readonly_fields = (
        "id", "message_id", "call", "job_run", "queue", "exchange", "routing_key", "reason", "deaths",
        "dead_at", "status", "times_retried", "handled_at", "handled_by", "headers_json", "body",
    )  # fmt: skip
    fields = readonly_fields
    actions = ("retry_letters", "discard_letters")
    object_actions = (("retry_letters", "Retry this task"), ("discard_letters", "Discard"))

    def has_retry_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("operations.retry_deadletter")

    @admin.display(description="task and arguments")
    def call(self, obj):
        return Truncator(dead_letters.summary(obj)).chars(120)

    @admin.display(description="job run")
    def job_run(self, obj):
        """The run a dead job part belongs to, where its other parts are."""
        run_id = dead_letters.arguments(obj).get("run_id")
        if not isinstance(run_id, int) or not JobRun.objects.filter(pk=run_id).exists():
            return "-"
        return format_html(
            '<a href="{}">run {}</a>', reverse("admin:operations_jobrun_change", args=[run_id]), run_id
        )

    @admin.display(description="headers")
    def headers_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.headers, indent=2, sort_keys=True, default=str))

    def _handle(self, request, queryset, *, verb: str, service) -> None:
        ids = list(queryset.filter(status=DeadLetter.Status.DEAD).values_list("pk", flat=True))
        if not ids:
            self.message_user(request, f"Nothing to {verb}: the selected tasks were handled.", messages.INFO)
            return self.back(request)
        if self.submission_token(request) is None:
            return self.back(request)
        with transaction.atomic():
            ids = [pk for pk in ids if self.first_submission(request, pk)]
        if not ids:
            self.message_user(request, "Already done by this form's first submission.", messages.WARNING)
            return self.back(request)
        try:
            done = service(ids, operator_id=request.user.pk)
        except Exception as error:  # the broker is down: nothing was marked
            self.message_user(
                request,
                f"Could not {verb} every selected task ({error!r}): those not done are still "
                "dead-lettered (see the list); try again when the broker answers.",
                messages.ERROR,
            )
            return self.back(request)
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=list(DeadLetter.objects.filter(pk__in=ids)),
            action_flag=CHANGE,
            change_message=f"{verb.capitalize()} (by {request.user.get_username()})",
        )
        self.message_user(request, f"{verb.capitalize()}: {done} task(s).", messages.SUCCESS)
        return self.back(request)

    @admin.action(description="Retry the selected tasks (publish them again)", permissions=["retry"])
    def retry_letters(self, request, queryset):
        return self._handle(request, queryset, verb="retry", service=dead_letters.retry)

    @admin.action(description="Discard the selected tasks", permissions=["retry"])
    def discard_letters(self, request, queryset):
        return self._handle(request, queryset, verb="discard", service=dead_letters.discard)
