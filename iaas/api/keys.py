"""Customers' API keys: making them, finding the key a request presents, recording
its use, revoking it.

A key is ``iaas_live_`` and 43 random base62 characters (256 bits). Only its SHA-256
digest is stored, and the digest is how a presented key is found (one indexed SELECT,
the same cost as REST framework's plain-text token). A slow password hash (PBKDF2,
argon2) exists to make guessing a *low-entropy* secret expensive; nobody can guess 256
random bits, so a fast hash loses nothing and keeps authentication to one statement.
Tokens made before keys existed (REST framework's, 40 hex characters) were carried
over by their digest too (migration 0003), so they keep working, and a key's format
never matters to the lookup.

The last use is written at most once per ``LAST_USED_RESOLUTION`` per key, by a
conditional UPDATE that only a request finding it stale issues: an authenticated
request costs no statement more than before, but for one request a minute per key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import string
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .locks import api_key_lock
from .models import ApiKey

KEY_PREFIX = "iaas_live_"
_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 43  # 43 base62 characters: 256 bits
# The characters of the random part shown in lists (prefix included): enough to tell
# a customer's keys apart, far too few to help guess one.
VISIBLE_SECRET_CHARACTERS = 6
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
NAME_MAX_LENGTH = 100


class KeyRejected(Exception):
    """The presented key does not authenticate; ``reason`` says why, for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedKey:
    """A new key and its secret: the only moment the secret exists outside the client."""

    api_key: ApiKey
    key: str


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    """``iaas_live_AbC123`` for a key, the first characters of a carried-over token."""
    start = len(KEY_PREFIX) if key.startswith(KEY_PREFIX) else 0
    return key[: start + VISIBLE_SECRET_CHARACTERS]


# --- Writes ---------------------------------------------------------------------------------


def api_key_create(
    *,
    owner_id: int,
    name: str,
    scope: str = ApiKey.Scope.READ_WRITE,
    expires_at: dt.datetime | None = None,
) -> IssuedKey:
    """A new key for the customer, ``read`` or ``read_write``, valid until ``expires_at``
    (None: until revoked). The answer holds the key; it is never stored."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"unknown scope {scope!r}")
    key = generate_key()
    api_key = ApiKey.objects.create(
        owner_id=owner_id,
        name=name[:NAME_MAX_LENGTH],
        prefix=visible_prefix(key),
        key_hash=key_digest(key),
        scope=scope,
        expires_at=expires_at,
    )
    return IssuedKey(api_key=api_key, key=key)


def api_key_revoke(*, owner_id: int, key_id: UUID) -> ApiKey:
    """Revoke one of the customer's keys, effective from the next request; revoking a
    revoked key changes nothing. Raises ApiKey.DoesNotExist when the customer has no
    such key (another customer's key is answered the same)."""
    with transaction.atomic():
        api_key = api_key_lock(key_id, owner_id=owner_id)
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
    return api_key


def api_keys_revoke(*, key_ids: list[UUID]) -> int:
    """Revoke these keys, whoever owns them (the operators' action); answers how many
    were not revoked yet."""
    return ApiKey.objects.filter(pk__in=key_ids, revoked_at=None).update(revoked_at=timezone.now())


def api_key_touch(*, api_key: ApiKey, now: dt.datetime | None = None) -> bool:
    """Record a use of the key if the recorded one is older than the resolution. The
    UPDATE is conditional, so concurrent requests write it once; a request that finds
    it fresh issues no statement. Answers whether a statement was issued."""
    now = now or timezone.now()
    stale_before = now - LAST_USED_RESOLUTION
    if api_key.last_used_at is not None and api_key.last_used_at >= stale_before:
        return False
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale_before), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now
    return True


# --- Reads ----------------------------------------------------------------------------------


def api_key_list(*, owner_id: int) -> QuerySet[ApiKey]:
    """The customer's keys that are not revoked (expired ones included), newest first."""
    return ApiKey.objects.filter(owner_id=owner_id, revoked_at=None).order_by("-created_at", "-pk")


def api_key_authenticate(*, key: str, now: dt.datetime | None = None) -> ApiKey:
    """The key (its owner loaded) that ``key`` is, if it may be used now: one SELECT.
    Raises KeyRejected otherwise."""
    try:
        api_key = ApiKey.objects.select_related("owner").get(key_hash=key_digest(key))
    except ApiKey.DoesNotExist:
        raise KeyRejected("Invalid key.") from None
    now = now or timezone.now()
    if api_key.revoked_at is not None:
        raise KeyRejected("This key was revoked.")
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise KeyRejected("This key has expired.")
    if not api_key.owner.is_active:
        raise KeyRejected("This customer's account is disabled.")
    return api_key
