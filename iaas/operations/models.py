"""The operator console's one table: the one-time tokens of operator forms that were
used, per row and action. A submission of an admin action claims its token in the
transaction that does the work (``iaas.common.admin.claim_operation_token``), so a
second submission of the same page (a double click, a browser retry) finds it used and
does nothing. Old rows are purged (``purge_operation_tokens``): a token is only worth
keeping as long as a browser might resubmit its page."""

from __future__ import annotations

import datetime as dt
import uuid

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone


class UsedOperationToken(models.Model):
    token = models.UUIDField()
    # What the token was used for: "<app>.<model>:<pk>:<action>".
    target = models.CharField(max_length=255)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["token", "target"], name="operations_token_used_once"),
        ]

    def __str__(self) -> str:
        return f"{self.token} for {self.target}"


def token_claim(token: uuid.UUID, target: str, user_id: int | None) -> bool:
    """Record ``token`` as used for ``target`` in the caller's transaction: True, or False
    when it was used before. The unique constraint decides: a concurrent claim of the
    same token waits for the first transaction and then conflicts (or, if the first
    rolled back, succeeds)."""
    try:
        with transaction.atomic():
            UsedOperationToken.objects.create(token=token, target=target[:255], used_by_id=user_id)
    except IntegrityError:
        return False
    return True


def tokens_purge(*, older_than: dt.datetime) -> int:
    deleted, _ = UsedOperationToken.objects.filter(used_at__lt=older_than).delete()
    return deleted
