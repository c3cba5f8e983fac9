"""One table: a change an operator or a batch run made to a row of some context, kept
for good (append-only in the database, like the ledger)."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class ChangeRecord(models.Model):
    """Who changed what, when, from what to what, and why. The object is named by its
    model (``"cloud.serverplan"``) and its primary key as text, never by a foreign key:
    the history knows no context, and outlives nothing it should not."""

    id = models.BigAutoField(primary_key=True)
    occurred_at = models.DateTimeField(default=timezone.now, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The operator; empty for a system run (see the actor label).",
    )
    actor_label = models.CharField(
        max_length=150,
        blank=True,
        help_text='Who, in words: the operator\'s username, or the run ("bill_usage").',
    )
    obj_type = models.CharField("object type", max_length=100, help_text='"app_label.model"')
    obj_id = models.CharField("object id", max_length=64)
    action = models.CharField(max_length=50)
    before = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    after = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["obj_type", "obj_id", "occurred_at"], name="audit_change_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.obj_type} {self.obj_id}: {self.action}"

    @property
    def who(self) -> str:
        if self.actor_id is not None and not self.actor_label:
            return self.actor.get_username()
        return self.actor_label or "system"
