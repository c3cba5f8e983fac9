"""Every row lock the API layer takes, in one place: a customer's API key, locked alone
(no money row is locked with it)."""

from __future__ import annotations

from uuid import UUID

from .models import ApiKey


def api_key_lock(key_id: UUID, *, owner_id: int) -> ApiKey:
    """Lock one of the customer's API keys, waiting for it (FOR UPDATE: a plain row
    lock, not NO KEY, as the key's revocation has always taken). Another customer's key
    is answered like a missing one: raises ApiKey.DoesNotExist."""
    return ApiKey.objects.select_for_update().get(pk=key_id, owner_id=owner_id)
