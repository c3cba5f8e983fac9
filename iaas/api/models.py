"""The API's own tables: stored responses of requests made with an Idempotency-Key, and
customers' API keys (hashed)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class IdempotencyKey(models.Model):
    """The first storable response (2xx, 402, 404, 409) to a customer's POST with a
    given key, committed in the same transaction as the request's work and replayed for
    ``IAAS_IDEMPOTENCY_KEY_TTL`` seconds to a request with the same key and body."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    # sha256 of method, path and the canonical JSON of the body.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    # The JSON as rendered, so a replay is byte for byte the first answer.
    response_body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "method", "path", "key"], name="idempotency_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}] -> {self.status_code}"


class ApiKey(models.Model):
    """A customer's API key. Only the SHA-256 digest of the key is stored (it is also the
    lookup: the key is 256 random bits, so the digest can neither be reversed nor guessed,
    and no slow password hash is needed); the key itself is shown once, when it is made.
    ``prefix`` is its first characters, to tell keys apart in lists and logs."""

    class Scope(models.TextChoices):
        READ = "read", "read"
        READ_WRITE = "read_write", "read and write"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=32)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Written at most once a minute per key (iaas.api.keys.LAST_USED_RESOLUTION).
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        permissions = [("revoke_apikey", "Can revoke API keys")]
        indexes = [models.Index(fields=["owner", "created_at"], name="api_apikey_owner_created")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scope__in=["read", "read_write"]), name="api_apikey_scope_known"
            ),
            models.CheckConstraint(
                condition=models.Q(key_hash__regex=r"^[0-9a-f]{64}$"), name="api_apikey_hash_is_sha256"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def may_write(self) -> bool:
        return self.scope == self.Scope.READ_WRITE
