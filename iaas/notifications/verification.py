"""Address verification: nothing but the verification link goes to an address until its
owner proves it reaches them by opening the link.

The link carries a signed token (django.core.signing, salted for this one use, so no
other signed value of the app passes for it) that binds the customer and the address it
was sent to, and expires after IAAS_EMAIL_VERIFY_DAYS (7 by default). Nothing is stored
per token: a link for an address the customer has changed since verifies nothing, and a
new link does not revoke an older one for the same address (both prove the same thing).

Opening the link (a GET) verifies. Mail scanners that fetch links before the customer
does (Outlook Safe Links, corporate gateways) may verify in their place, but they fetch
from inside the recipient's mailbox, and reaching that mailbox is all verification is
meant to prove; a confirm button would only add a step for every customer."""

from __future__ import annotations

import datetime as dt
import enum

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import locks

SALT = "iaas.notifications.email-verify"


class Verdict(enum.Enum):
    VERIFIED = "verified"  # verified now
    ALREADY_VERIFIED = "already_verified"  # opened again: still verified, nothing changed
    EXPIRED = "expired"
    ADDRESS_CHANGED = "address_changed"  # the link is for an address no longer on the account
    INVALID = "invalid"  # not a token of ours (tampered, truncated, another salt)

    @property
    def ok(self) -> bool:
        return self in (Verdict.VERIFIED, Verdict.ALREADY_VERIFIED)


def valid_for() -> dt.timedelta:
    return dt.timedelta(days=getattr(settings, "IAAS_EMAIL_VERIFY_DAYS", 7))


def token_for(*, owner_id: int, address: str) -> str:
    """A URL-safe token naming the customer and the address, signed with a timestamp."""
    return signing.dumps({"o": owner_id, "a": address}, salt=SALT, compress=True)


def link_for(*, owner_id: int, address: str) -> str:
    return f"{settings.IAAS_PUBLIC_URL}/email/verify/{token_for(owner_id=owner_id, address=address)}/"


def email_verify(token: str) -> Verdict:
    """Verify the address the token names if it is still the customer's address."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=valid_for())
    except signing.SignatureExpired:
        return Verdict.EXPIRED
    except signing.BadSignature:
        return Verdict.INVALID
    if not isinstance(payload, dict) or not isinstance(payload.get("o"), int) or "a" not in payload:
        return Verdict.INVALID
    with transaction.atomic():
        row = locks.email_settings_lock(payload["o"])
        if row is None:
            return Verdict.INVALID
        if row.address != payload["a"]:
            return Verdict.ADDRESS_CHANGED
        if row.verified_at is not None:
            return Verdict.ALREADY_VERIFIED
        row.verified_at = timezone.now()
        row.updated_at = row.verified_at
        row.save(update_fields=["verified_at", "updated_at"])
    return Verdict.VERIFIED


@never_cache
@require_GET
def email_verify_page(request: HttpRequest, token: str) -> HttpResponse:
    """The page the link opens: verified, or why not (400). The token is in the URL, so
    the page sends no referrer and asks not to be indexed."""
    verdict = email_verify(token)
    response = render(
        request,
        "notifications/email_verified.html",
        {"verdict": verdict.value, "ok": verdict.ok, "valid_days": valid_for().days},
        status=200 if verdict.ok else 400,
    )
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response
