"""Reads of the history: an object's latest changes, newest first."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import ChangeRecord


def changes_of(*, obj_type: str, obj_id) -> QuerySet[ChangeRecord]:
    """An object's changes, newest first (served by the (type, id, time) index)."""
    return (
        ChangeRecord.objects.filter(obj_type=obj_type.lower(), obj_id=str(obj_id))
        .select_related("actor")
        .order_by("-occurred_at", "-id")
    )
