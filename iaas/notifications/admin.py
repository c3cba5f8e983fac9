"""What operators see of customers' notifications: endpoints (never their secrets),
each delivery with its attempts, the messages' bodies, the emails sent or waiting, and
customers' email settings. Operators can send a delivery or an email again, and
disable an endpoint that misbehaves (the customer enables it again through the API)."""

from __future__ import annotations

import datetime as dt
import json
import re

from django.contrib import admin
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from iaas.common.admin import ReadOnlyAdmin, link, table, user_link

from . import locks, webhooks
from .models import EmailSettings, OutgoingEmail, WebhookDelivery, WebhookEndpoint, WebhookMessage

VERIFY_LINK = re.compile(r"(/email/verify/)[^/\s\"'<>]+/?")


def _delivery_url(pk) -> str:
    return reverse("admin:notifications_webhookdelivery_change", args=[pk])


def _without_links(text: str) -> str:
    """An email as staff may read it: a verification link would let whoever reads it
    verify the customer's address, so its token is not shown."""
    return VERIFY_LINK.sub(r"\1[link hidden]/", text)


def _when(moment) -> str:
    return "-" if moment is None else f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("url", "customer", "enabled", "types", "failing_since", "disabled_at", "created_at")
    list_filter = ("enabled", ("failing_since", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("url", "owner__username", "owner__email", "id")
    search_help_text = "URL, customer's username or email, endpoint id."
    ordering = ("-created_at",)
    readonly_fields = (
        "id", "customer", "url", "description", "types", "enabled", "failing_since", "disabled_at",
        "disabled_reason", "previous_secret_expires_at", "created_at", "updated_at", "recent_deliveries",
    )  # fmt: skip
    fields = readonly_fields
    actions = ("disable_endpoints",)
    object_actions = (("disable_endpoints", "Disable this endpoint"),)

    def has_disable_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("notifications.change_webhookendpoint")

    @admin.display(description="customer")
    def customer(self, obj):
        return user_link(obj.owner)

    @admin.display(description="event types")
    def types(self, obj):
        return ", ".join(obj.event_types)

    @admin.display(description="latest deliveries")
    def recent_deliveries(self, obj):
        rows = [
            (
                link(_delivery_url(d.pk), d.event_type),
                d.status,
                d.attempts,
                d.last_status_code or "-",
                _when(d.created_at),
            )
            for d in obj.deliveries.order_by("-created_at")[:20]
        ]
        return table(("event type", "status", "attempts", "last status", "created"), rows)

    @admin.action(
        description="Disable the selected endpoints (nothing more is sent)", permissions=["disable"]
    )
    def disable_endpoints(self, request, queryset):
        def disable(endpoint):
            with transaction.atomic():
                locked = locks.endpoint_lock(endpoint.pk)
                locked.enabled = False
                locked.disabled_at = timezone.now()
                locked.disabled_reason = f"Disabled by an operator ({request.user.get_username()})."
                locked.save(update_fields=["enabled", "disabled_at", "disabled_reason"])

        return self.run_service(request, queryset, disable, done="Disabled")


class AttemptsMixin:
    @admin.display(description="attempts")
    def attempts_table(self, obj):
        rows = [
            (
                a.number,
                _when(a.attempted_at),
                a.status_code or "-",
                f"{a.duration_ms} ms",
                a.error or "-",
                _when(a.next_attempt_at),
            )
            for a in obj.attempt_set.all()[:50]
        ]
        return table(("#", "at", "status", "took", "error", "next try"), rows)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(AttemptsMixin, ReadOnlyAdmin):
    list_display = (
        "event_type", "customer", "endpoint_url", "status", "attempts", "last_status_code", "next_attempt_at",
        "created_at",
    )  # fmt: skip
    list_filter = ("status", "event_type", "created_at")
    search_fields = ("message__id", "endpoint__url", "owner__username", "id")
    search_help_text = "webhook-id (the event's id), endpoint URL, customer's username, delivery id."
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_select_related = ("endpoint", "owner")
    readonly_fields = (
        "id", "webhook_id", "customer", "endpoint_url", "event_type", "status", "attempts", "next_attempt_at",
        "claimed_until", "retry_window_start", "last_attempt_at", "last_status_code", "last_error",
        "succeeded_at", "redeliveries", "created_at", "attempts_table", "body",
    )  # fmt: skip
    fields = readonly_fields
    actions = ("redeliver",)
    object_actions = (("redeliver", "Send again"),)

    def has_redeliver_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("notifications.change_webhookdelivery")

    @admin.display(description="customer")
    def customer(self, obj):
        return user_link(obj.owner)

    @admin.display(description="endpoint")
    def endpoint_url(self, obj):
        return link(
            reverse("admin:notifications_webhookendpoint_change", args=[obj.endpoint_id]), obj.endpoint.url
        )

    @admin.display(description="webhook-id")
    def webhook_id(self, obj):
        return obj.message_id

    @admin.display(description="body")
    def body(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(json.loads(obj.message.body), indent=2))

    @admin.action(
        description="Send the selected deliveries again (same webhook-id)", permissions=["redeliver"]
    )
    def redeliver(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda delivery: webhooks.delivery_redeliver(owner_id=delivery.owner_id, delivery_id=delivery.pk),
            done="Queued again",
        )


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_type", "customer", "occurred_at", "created_at")
    list_filter = ("event_type", "created_at")
    search_fields = ("id", "owner__username")
    ordering = ("-created_at",)
    readonly_fields = ("id", "event_type", "customer", "occurred_at", "created_at", "pretty_body")
    fields = readonly_fields

    @admin.display(description="customer")
    def customer(self, obj):
        return user_link(obj.owner)

    @admin.display(description="body")
    def pretty_body(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(json.loads(obj.body), indent=2))


@admin.register(OutgoingEmail)
class OutgoingEmailAdmin(ReadOnlyAdmin):
    list_display = ("subject", "kind", "to", "customer", "status", "attempts", "sent_at", "created_at")
    list_filter = ("status", "kind", "created_at")
    search_fields = ("to", "subject", "owner__username", "event_id")
    ordering = ("-created_at",)
    readonly_fields = (
        "id", "kind", "customer", "to", "subject", "status", "attempts", "next_attempt_at", "last_error",
        "sent_at", "event_id", "created_at", "text_shown", "html_preview",
    )  # fmt: skip
    fields = readonly_fields
    actions = ("send_again",)
    object_actions = (("send_again", "Send again"),)

    def has_send_again_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("notifications.change_outgoingemail")

    @admin.display(description="customer")
    def customer(self, obj):
        return user_link(obj.owner)

    @admin.display(description="text")
    def text_shown(self, obj):
        return format_html("<pre>{}</pre>", _without_links(obj.text))

    @admin.display(description="HTML")
    def html_preview(self, obj):
        # Sandboxed: the email's HTML never runs script or reaches the admin's origin.
        return format_html(
            '<iframe sandbox="" srcdoc="{}" style="width:720px;height:600px;border:1px solid #ccc"></iframe>',
            _without_links(obj.html),
        )

    @admin.action(description="Send the selected emails again", permissions=["send_again"])
    def send_again(self, request, queryset):
        def again(email):
            # A fresh set of attempts, now; an email a sender is sending (a live claim)
            # is left to it, so it never goes out twice at once.
            now = timezone.now()
            OutgoingEmail.objects.filter(pk=email.pk).filter(
                Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
            ).update(status=OutgoingEmail.Status.PENDING, next_attempt_at=now, attempts=0, last_error="")

        return self.run_service(request, queryset, again, done="Queued again")


@admin.register(EmailSettings)
class EmailSettingsAdmin(ReadOnlyAdmin):
    list_display = ("address", "customer", "verified_at", "low_balance", "services", "payments", "invoices")
    list_filter = (
        ("verified_at", admin.EmptyFieldListFilter),
        "low_balance",
        "services",
        "payments",
        "invoices",
    )
    search_fields = ("address", "owner__username")
    ordering = ("owner_id",)

    @admin.display(description="customer")
    def customer(self, obj):
        return user_link(obj.owner)
