"""Emails to customers: what goes out for an event, to whom, composed how, and what a
sending attempt's outcome does.

An email is composed when its event is applied (in the inbox transaction, so once per
event) and stored as an OutgoingEmail, unique per customer, kind and event: a duplicate
composes nothing new. The sender (iaas.notifications.sender) claims due emails, calls
``send`` outside any transaction and hands the outcome to ``outcome_record``.

Who gets what: only a verified address hears about anything but its own verification
link, and only about the categories its owner keeps on (EmailSettings: low_balance,
services, payments, invoices). Three kinds ignore the categories: the verification link,
a disabled webhook endpoint, and a top-up the payment provider took back (about the
account: money owed, a wallet frozen). A service the customer ended themselves (reason
``customer``) is not announced back to them.

A resumed service gets a short email in the ``services`` category: the customer who was
told "this server will be terminated on ..." needs to hear that the clock stopped, and an
operator's hold is lifted without any act of theirs.

Every email has a text body and an HTML alternative from the templates in
templates/notifications/email/ (``<kind>_subject.txt``, ``<kind>.txt``, ``<kind>.html``),
each with a footer saying why it was sent and where to change that."""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass
from email.utils import parseaddr

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import BaseUserManager
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from iaas.contracts import events as e
from iaas.contracts.errors import DomainError
from iaas.contracts.types import format_minor_units

from . import catalog, locks, verification
from .backoff import jittered_backoff
from .models import EmailSettings, OutgoingEmail, WebhookEndpoint

logger = logging.getLogger(__name__)

TEMPLATES = "notifications/email"
SETTINGS_PATH = "/api/v1/notifications/email/"
FIRST_RETRY_SECONDS = 60
MAX_RETRY_SECONDS = 6 * 3600
# A verification link goes out at most once per this many seconds per customer (an
# address typed by the customer could be anyone's: no mail bomb through us).
VERIFICATION_COOLDOWN_SECONDS = 60
VERIFICATION_LINKS_PER_DAY = 5
# Ids of emails that answer no event (a disabled endpoint), derived so that one
# disabling composes one email however often it is recorded.
EMAIL_NAMESPACE = uuid.UUID("0c6f3a52-7d0e-4f59-9a43-2f1e5b7c9d10")

# What each kind is about: the EmailSettings flag that turns it off (None: always sent
# to a verified address, or, for the link itself, to the unverified one).
CATEGORY: dict[str, str | None] = {
    "verify_email": None,
    "webhook_endpoint_disabled": None,
    # Money the card's bank or a refund took back is about the account, not one payment:
    # the wallet may owe it and be frozen (nothing bought or renewed, its services
    # suspended) until the customer talks to support. Turning off "payments" must not
    # hide that.
    "top_up_reversed": None,
    "low_balance": "low_balance",
    "service_suspended": "services",
    "service_resumed": "services",
    "service_ends_soon": "services",
    "service_ended": "services",
    "top_up_succeeded": "payments",
    "top_up_failed": "payments",
    "refund_made": "payments",
    "invoice_issued": "invoices",
}

# The colour of the band under the header: what kind of news it is at a glance.
ACCENT = {
    "verify_email": "#2563eb",
    "webhook_endpoint_disabled": "#d97706",
    "low_balance": "#d97706",
    "service_suspended": "#dc2626",
    "service_resumed": "#16a34a",
    "service_ends_soon": "#dc2626",
    "service_ended": "#4b5563",
    "top_up_succeeded": "#16a34a",
    "top_up_failed": "#dc2626",
    "top_up_reversed": "#dc2626",  # amber for a refund paid back in full (_top_up_reversed)
    "refund_made": "#16a34a",
    "invoice_issued": "#2563eb",
}

CATEGORY_WORDS = {
    "low_balance": "low-balance warnings",
    "services": "emails about your services (suspensions, warnings before they end, and their end)",
    "payments": "emails about payments (top-ups and refunds)",
    "invoices": "emails about invoices",
}

# Webhook event types (catalog.EVENT_TYPES) that are not about a service, by kind.
_MONEY_KINDS = {
    "wallet.low_balance": "low_balance",
    "top_up.succeeded": "top_up_succeeded",
    "top_up.failed": "top_up_failed",
    "top_up.reversed": "top_up_reversed",
    "refund.created": "refund_made",
    "invoice.issued": "invoice_issued",
}
_SERVICE_KINDS = {
    "suspended": "service_suspended",
    "resumed": "service_resumed",
    "termination_scheduled": "service_ends_soon",
    "cancellation_scheduled": "service_ends_soon",
    "deletion_scheduled": "service_ends_soon",
    "terminated": "service_ended",
    "cancelled": "service_ended",
    "deleted": "service_ended",
}


class VerificationTooSoon(Exception):
    """A verification link was sent less than VERIFICATION_COOLDOWN_SECONDS ago."""

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = wait_seconds
        super().__init__(f"A verification link was sent moments ago; wait {wait_seconds:.0f} seconds.")


class AlreadyVerified(DomainError):
    code = "invalid_state"
    default_detail = "The address is already verified."


@dataclass(frozen=True)
class Composed:
    subject: str
    text: str
    html: str


# --- Facts in words -----------------------------------------------------------------------


def format_money(amount: int, currency: str) -> str:
    """``1250, "EUR"`` -> ``"12.50 EUR"``, as the admin writes it (iaas.contracts.types)."""
    return format_minor_units(amount, currency)


def _moment(value) -> dt.datetime | None:
    """A moment from an event field or a resource's ISO 8601 text."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and timezone.is_naive(value):
        value = timezone.make_aware(value, dt.UTC)
    return value


def format_moment(value) -> str:
    """``3 December 2026, 14:00 UTC``: one unambiguous form in every email."""
    moment = _moment(value)
    if moment is None:
        return ""
    moment = moment.astimezone(dt.UTC)
    return f"{moment.day} {moment:%B %Y, %H:%M} UTC"


def format_day(value) -> str:
    moment = _moment(value)
    return "" if moment is None else f"{moment.astimezone(dt.UTC).day} {moment.astimezone(dt.UTC):%B %Y}"


EN_DASH = "\u2013"


def format_period(start, end) -> str:
    """A half-open period [start, end) as the days it covers: ``1 - 30 November 2026``
    (with an en dash)."""
    first, after = _moment(start), _moment(end)
    if first is None or after is None:
        return ""
    first = first.astimezone(dt.UTC)
    last = (after - dt.timedelta(microseconds=1)).astimezone(dt.UTC)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day} {EN_DASH} {last.day} {last:%B %Y}"
    return f"{format_day(first)} {EN_DASH} {format_day(last)}"


def public_url(path: str) -> str:
    return f"{settings.IAAS_PUBLIC_URL}{path}"


@dataclass(frozen=True)
class ServiceWords:
    noun: str  # "server"
    ended: str  # "terminated"
    end: str  # "terminate"
    api_path: str  # where the API shows it


SERVICES = {
    "server": ServiceWords("server", "terminated", "terminate", "/api/v1/cloud/servers/{id}/"),
    "subscription": ServiceWords(
        "hosting subscription", "cancelled", "cancel", "/api/v1/hosting/subscriptions/{id}/"
    ),
    "volume": ServiceWords("volume", "deleted", "delete", "/api/v1/storage/volumes/{id}/"),
}

CAUSE_WORDS = {
    "unpaid": "its wallet could not pay for it",
    "wallet_blocked": "its wallet is frozen or closed",
    "operator": "our staff put it on hold",
}

CONTEXT_WORDS = {"cloud": "cloud servers", "hosting": "web hosting", "storage": "block storage"}


def _service_kind(event: e.Event) -> str:
    if isinstance(event, e.ServiceEndsSoon):
        return event.kind
    for kind in SERVICES:
        if hasattr(event, f"{kind}_id"):
            return kind
    raise ValueError(f"{type(event).__name__} names no service")


def _service_facts(event: e.Event) -> dict:
    kind = _service_kind(event)
    words = SERVICES[kind]
    resource = getattr(event, "resource", None) or {}
    service_id = str(getattr(event, "service_id", None) or getattr(event, f"{kind}_id"))
    name = resource.get("domain") or resource.get("name") or service_id
    ends_at = resource.get("terminates_at") or resource.get("cancels_at")
    return {
        "service_kind": kind,
        "noun": words.noun,
        "Noun": words.noun[:1].upper() + words.noun[1:],
        "ended_word": words.ended,
        "end_word": words.end,
        "name": name,
        "service_id": service_id,
        "service_url": public_url(words.api_path.format(id=service_id)),
        "plan": resource.get("plan", ""),
        "wallet_id": str(event.wallet_id),
        "top_up_url": public_url(f"/api/v1/wallets/{event.wallet_id}/top-ups/"),
        "ends_at": format_moment(ends_at),
    }


# --- What each kind says ------------------------------------------------------------------


def _low_balance(event: e.LowBalanceReached) -> dict:
    return {
        "currency": event.currency,
        "available": format_money(event.available, event.currency),
        "threshold": format_money(event.threshold, event.currency),
        "wallet_id": str(event.wallet_id),
        "top_up_url": public_url(f"/api/v1/wallets/{event.wallet_id}/top-ups/"),
        "wallet_url": public_url(f"/api/v1/wallets/{event.wallet_id}/"),
    }


def _suspended(event) -> dict:
    facts = _service_facts(event)
    resource = event.resource or {}
    causes = [c for c in resource.get("suspension_causes") or [] if c in CAUSE_WORDS]
    if event.cause in CAUSE_WORDS and event.cause not in causes:
        causes.insert(0, event.cause)
    if facts["ends_at"]:
        clock = "ends"
    elif "operator" in causes:
        clock = "operator_hold"
    elif "wallet_blocked" in causes:
        clock = "wallet_blocked"
    else:
        clock = "grace"  # unpaid, from a resource that does not say when yet
    return {
        **facts,
        "causes": [CAUSE_WORDS[c] for c in causes],
        "unpaid": "unpaid" in causes,
        "wallet_blocked": "wallet_blocked" in causes,
        "operator": "operator" in causes,
        # An operator's reason is written for the customer; a batch run's is an error code.
        "operator_reason": event.reason if event.cause == "operator" else "",
        "clock": clock,
    }


def _ends_soon(event: e.ServiceEndsSoon) -> dict:
    return {**_service_facts(event), "ends_at": format_moment(event.ends_at)}


def _resumed(event) -> dict:
    return {**_service_facts(event), "ends_at": ""}


def _ended(event) -> dict:
    reason = event.reason or ""
    if reason == "unpaid":
        because = "its wallet did not pay for it before the end of the grace period"
    elif reason.startswith("operator"):
        because = "our staff ended it"  # never the operator's username
    else:
        because = ""
    return {**_service_facts(event), "ends_at": "", "because": because}


def _top_up(event) -> dict:
    return {
        "amount": format_money(event.amount, event.currency),
        "currency": event.currency,
        "top_up_id": str(event.top_up_id),
        "wallet_id": str(event.wallet_id),
        "reason": getattr(event, "reason", ""),
        "top_up_url": public_url(f"/api/v1/wallets/{event.wallet_id}/top-ups/"),
    }


def _top_up_reversed(event: e.TopUpReversed) -> dict:
    """A card payment the provider took back: the payment as made (the top-up: its amount,
    the day it was credited), what was taken back and from where, what is owed."""
    resource = event.resource or {}
    paid = resource.get("amount") or event.amount
    return {
        "dispute": event.kind == "dispute",
        "payment": format_money(paid, event.currency),
        "paid_on": format_day(resource.get("completed_at") or resource.get("created_at")),
        "amount": format_money(event.amount, event.currency),
        "part": event.amount < paid,  # taken back in part: "20.00 EUR of your payment of 50.00"
        "taken": format_money(event.taken, event.currency),
        "nothing_taken": event.taken == 0,
        "debt_added": format_money(event.debt_added, event.currency) if event.debt_added else "",
        "currency": event.currency,
        "frozen": event.frozen,
        "top_up_id": str(event.top_up_id),
        "wallet_id": str(event.wallet_id),
        "wallet_url": public_url(f"/api/v1/wallets/{event.wallet_id}/"),
        "top_up_url": public_url(f"/api/v1/wallets/{event.wallet_id}/top-ups/"),
        # Red for a freeze or a debt; a refund the wallet simply paid back is a warning.
        "accent": ACCENT["top_up_reversed"] if event.frozen or event.debt_added else "#d97706",
    }


def _refund(event: e.ChargeRefunded) -> dict:
    resource = event.resource or {}
    return {
        "amount": format_money(event.amount, event.currency),
        "currency": event.currency,
        "service": CONTEXT_WORDS.get(event.context, event.context),
        "description": resource.get("description", ""),
        "charge_id": str(event.charge_id or ""),
        "refund_id": str(event.refund_id),
        "ledger_url": public_url(f"/api/v1/wallets/{event.wallet_id}/ledger/"),
    }


def _invoice(event: e.InvoiceIssued) -> dict:
    resource = event.resource or {}
    shown = 25
    lines = [
        {"description": line.get("description", ""), "amount": format_money(line["amount"], event.currency)}
        for line in (resource.get("lines") or [])[:shown]
    ]
    return {
        "number": event.number,
        "period": format_period(resource.get("period_start"), resource.get("period_end")),
        "issued_at": format_day(resource.get("issued_at") or event.occurred_at),
        "total": format_money(event.total, event.currency),
        "lines": lines,
        "more_lines": max(0, len(resource.get("lines") or []) - shown),
        "pdf_url": public_url(f"/api/v1/invoices/{event.invoice_id}/pdf/"),
        "invoice_url": public_url(f"/api/v1/invoices/{event.invoice_id}/"),
    }


FACTS = {
    "low_balance": _low_balance,
    "service_suspended": _suspended,
    "service_resumed": _resumed,
    "service_ends_soon": _ends_soon,
    "service_ended": _ended,
    "top_up_succeeded": _top_up,
    "top_up_failed": _top_up,
    "top_up_reversed": _top_up_reversed,
    "refund_made": _refund,
    "invoice_issued": _invoice,
}


def kind_for(event_type: catalog.EventType) -> str | None:
    """The email kind of a webhook event type (None: no email for it)."""
    if event_type.name in _MONEY_KINDS:
        return _MONEY_KINDS[event_type.name]
    _, _, what = event_type.name.partition(".")
    return _SERVICE_KINDS.get(what)


# --- Composing ----------------------------------------------------------------------------


def _tidy_text(text: str) -> str:
    """Template tags leave blank lines and trailing spaces behind: at most one blank line."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def compose(kind: str, facts: dict, *, owner: EmailSettings, username: str) -> Composed:
    """The subject, text and HTML of a ``kind`` email saying ``facts``."""
    category = CATEGORY[kind]
    context = {
        "accent": ACCENT[kind],  # unless the facts say a sharper one
        **facts,
        "kind": kind,
        "username": username,
        "address": owner.address,
        "category": category,
        "category_words": CATEGORY_WORDS.get(category or "", ""),
        "settings_url": public_url(SETTINGS_PATH),
        "brand": getattr(settings, "IAAS_EMAIL_BRAND", "IaaS Cloud"),
    }
    subject = render_to_string(f"{TEMPLATES}/{kind}_subject.txt", context)
    subject = " ".join(subject.split())[:200]
    context["subject"] = subject
    return Composed(
        subject=subject,
        text=_tidy_text(render_to_string(f"{TEMPLATES}/{kind}.txt", context)),
        html=render_to_string(f"{TEMPLATES}/{kind}.html", context),
    )


def _username(owner_id: int) -> str:
    return get_user_model().objects.filter(pk=owner_id).values_list("username", flat=True).first() or ""


def _queue(*, owner: EmailSettings, kind: str, event_id: uuid.UUID, facts: dict) -> None:
    """Compose and store the email (INSERT ... ON CONFLICT DO NOTHING: once per customer,
    kind and event, whoever composes it twice)."""
    composed = compose(kind, facts, owner=owner, username=_username(owner.owner_id))
    OutgoingEmail.objects.bulk_create(
        [
            OutgoingEmail(
                owner_id=owner.owner_id,
                kind=kind,
                event_id=event_id,
                to=owner.address,
                subject=composed.subject,
                text=composed.text,
                html=composed.html,
            )
        ],
        ignore_conflicts=True,
    )


def settings_for(owner_id: int) -> EmailSettings:
    """The customer's email settings, made on first use (customers from before this
    table: their account's address, unverified)."""
    row = EmailSettings.objects.filter(owner_id=owner_id).first()
    if row is not None:
        return row
    address = get_user_model().objects.filter(pk=owner_id).values_list("email", flat=True).first() or ""
    EmailSettings.objects.bulk_create(
        [EmailSettings(owner_id=owner_id, address=address)], ignore_conflicts=True
    )
    return EmailSettings.objects.get(owner_id=owner_id)


def queue_for_event(*, event_type: catalog.EventType, event: e.Event) -> None:
    """Queue the email ``event`` calls for, if its owner wants it and can receive it
    (called in the inbox transaction, once per event and webhook type)."""
    owner_id = getattr(event, "owner_id", None)
    kind = kind_for(event_type)
    if owner_id is None or kind is None:
        return
    if kind == "service_ended" and event.reason == "customer":
        return  # they asked for it a moment ago, and the API answered
    owner = settings_for(owner_id)
    category = CATEGORY[kind]
    if not owner.address or owner.verified_at is None or (category and not getattr(owner, category)):
        return
    _queue(owner=owner, kind=kind, event_id=event.event_id, facts=FACTS[kind](event))


# --- Verification -------------------------------------------------------------------------


def verification_facts(owner: EmailSettings) -> dict:
    return {
        "link": verification.link_for(owner_id=owner.owner_id, address=owner.address),
        "valid_days": verification.valid_for().days,
    }


def _verification_queue(owner: EmailSettings, *, event_id: uuid.UUID) -> None:
    """The link to the owner's current address (the row is locked or fresh)."""
    _queue(owner=owner, kind="verify_email", event_id=event_id, facts=verification_facts(owner))
    owner.verification_sent_at = timezone.now()
    owner.save(update_fields=["verification_sent_at"])


def _cooldown_left(owner: EmailSettings, now: dt.datetime) -> float:
    """Seconds until another link may go out: one a minute, and at most
    VERIFICATION_LINKS_PER_DAY a day (nobody uses us to flood an address they typed in)."""
    waits = [0.0]
    if owner.verification_sent_at is not None:
        since = (now - owner.verification_sent_at).total_seconds()
        waits.append(VERIFICATION_COOLDOWN_SECONDS - since)
    day = dt.timedelta(days=1)
    recent = list(
        OutgoingEmail.objects.filter(owner_id=owner.owner_id, kind="verify_email", created_at__gt=now - day)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:VERIFICATION_LINKS_PER_DAY]
    )
    if len(recent) >= VERIFICATION_LINKS_PER_DAY:
        waits.append((recent[-1] + day - now).total_seconds())
    return max(waits)


def on_customer_registered(event: e.CustomerRegistered) -> None:
    """The customer's settings with the address they registered with (unverified), and
    the link to verify it. A customer whose settings exist already (made on first use,
    or changed since) keeps them: the link goes to the address on the row."""
    settings_for_new = EmailSettings(owner_id=event.owner_id, address=event.email)
    EmailSettings.objects.bulk_create([settings_for_new], ignore_conflicts=True)
    with transaction.atomic():
        owner = locks.email_settings_lock(event.owner_id)
        if owner.verified_at is not None or not owner.address:
            return
        _verification_queue(owner, event_id=event.event_id)


def verification_resend(*, owner_id: int) -> EmailSettings:
    """Send the link again (the customer asked): at most once per cooldown."""
    settings_for(owner_id)
    now = timezone.now()
    with transaction.atomic():
        owner = locks.email_settings_lock(owner_id)
        if owner.verified_at is not None:
            raise AlreadyVerified()
        if not owner.address:
            raise AlreadyVerified("There is no address to verify: set one first.")
        wait = _cooldown_left(owner, now)
        if wait:
            raise VerificationTooSoon(wait)
        _verification_queue(owner, event_id=uuid.uuid4())
    return owner


def email_settings_update(
    *, owner_id: int, address: str, low_balance: bool, services: bool, payments: bool, invoices: bool
) -> EmailSettings:
    """Replace the customer's settings. A new address is unverified and gets a link (so
    changing it is subject to the link's cooldown: VerificationTooSoon, nothing changed)."""
    address = BaseUserManager.normalize_email(address)
    settings_for(owner_id)
    now = timezone.now()
    with transaction.atomic():
        owner = locks.email_settings_lock(owner_id)
        changed = address != owner.address
        if changed:
            wait = _cooldown_left(owner, now)
            if wait:
                raise VerificationTooSoon(wait)
        owner.low_balance, owner.services = low_balance, services
        owner.payments, owner.invoices = payments, invoices
        owner.updated_at = now
        if changed:
            owner.address = address
            owner.verified_at = None
            # What was composed for the old address is not sent to it any more.
            OutgoingEmail.objects.filter(owner_id=owner_id, status=OutgoingEmail.Status.PENDING).update(
                status=OutgoingEmail.Status.FAILED,
                last_error="not sent: the address changed",
                claimed_until=None,
            )
        owner.save()
        if changed:
            _verification_queue(owner, event_id=uuid.uuid4())
    return owner


# --- The account --------------------------------------------------------------------------


def queue_endpoint_disabled(endpoint: WebhookEndpoint) -> None:
    """Tell the owner their endpoint was disabled (whatever their categories say: it is
    about their account), once per disabling."""
    owner = settings_for(endpoint.owner_id)
    if not owner.address or owner.verified_at is None:
        return
    disabled_at = endpoint.disabled_at or timezone.now()
    event_id = uuid.uuid5(EMAIL_NAMESPACE, f"endpoint-disabled:{endpoint.pk}:{disabled_at.isoformat()}")
    facts = endpoint_disabled_facts(endpoint)
    _queue(owner=owner, kind="webhook_endpoint_disabled", event_id=event_id, facts=facts)


def endpoint_disabled_facts(endpoint: WebhookEndpoint) -> dict:
    return {
        "url": endpoint.url,
        "endpoint_id": str(endpoint.pk),
        "description": endpoint.description,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": format_moment(endpoint.disabled_at),
        "failing_since": format_moment(endpoint.failing_since),
        "endpoint_url": public_url(f"/api/v1/webhooks/endpoints/{endpoint.pk}/"),
        "deliveries_url": public_url(f"/api/v1/webhooks/deliveries/?endpoint={endpoint.pk}"),
    }


# --- Sending ------------------------------------------------------------------------------


def _message_domain() -> str:
    _, sender = parseaddr(settings.DEFAULT_FROM_EMAIL)
    return sender.rpartition("@")[2] or "localhost"


def send(email: OutgoingEmail) -> None:
    """Hand the email to Django's email backend (no database here). Every attempt of one
    email carries the same Message-ID, so a mail system that got it twice (an attempt
    whose outcome was lost) can tell. Raises on failure."""
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=email.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email.to],
        headers={
            "Message-ID": f"<{email.pk}@{_message_domain()}>",
            "Auto-Submitted": "auto-generated",  # RFC 3834: no vacation replies to us
            "X-Auto-Response-Suppress": "All",
            "X-IaaS-Email-Kind": email.kind,
        },
    )
    message.attach_alternative(email.html, "text/html")
    if message.send(fail_silently=False) != 1:
        raise RuntimeError("the email backend accepted no message")


def retry_delay(attempts: int) -> dt.timedelta:
    """After the ``attempts``-th failure: 1 min, 4 min, 16 min, ... at most 6 hours, each
    with ±20% jitter (a mail server that was down does not get every email at once)."""
    return jittered_backoff(attempts, first=FIRST_RETRY_SECONDS, cap=MAX_RETRY_SECONDS)


def outcome_record(*, email_id: uuid.UUID, error: str, claimed_until: dt.datetime) -> None:
    """Record a sending attempt: sent, or retried later, or given up after
    IAAS_EMAIL_MAX_ATTEMPTS. Only the sender holding the claim records (one that outlived
    its lease finds the claim changed and records nothing)."""
    now = timezone.now()
    with transaction.atomic():
        email = locks.email_lock(email_id)
        if email is None or email.status != OutgoingEmail.Status.PENDING:
            return
        if email.claimed_until != claimed_until:  # another sender's claim now
            return
        email.attempts += 1
        email.claimed_until = None
        email.last_error = error[:500]
        if not error:
            email.status = OutgoingEmail.Status.SENT
            email.sent_at = now
        elif email.attempts >= settings.IAAS_EMAIL_MAX_ATTEMPTS:
            email.status = OutgoingEmail.Status.FAILED
            logger.warning("email %s to customer %s given up: %s", email.pk, email.owner_id, error)
        else:
            email.next_attempt_at = now + retry_delay(email.attempts)
        email.save(
            update_fields=["attempts", "claimed_until", "last_error", "status", "sent_at", "next_attempt_at"]
        )
