# ruff: noqa: E501 (rows of test data, one a line)
"""The notifications' upkeep: old attempts, finished deliveries and sent emails are
purged (pending ones never), and the stored secrets are re-encrypted under a new key."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from io import StringIO

import pytest
import time_machine
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from iaas.notifications import webhooks
from iaas.notifications.models import (
    OutgoingEmail,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)

pytestmark = pytest.mark.django_db


def delivery(endpoint, status: str, *, at: dt.datetime) -> WebhookDelivery:
    message = WebhookMessage.objects.create(
        id=uuid.uuid4(), owner_id=endpoint.owner_id, event_type="top_up.succeeded", occurred_at=at, body="{}",
        created_at=at,
    )  # fmt: skip
    made = WebhookDelivery.objects.create(
        message=message, endpoint=endpoint, owner_id=endpoint.owner_id, event_type=message.event_type,
        status=status, created_at=at,
    )  # fmt: skip
    WebhookAttempt.objects.create(delivery=made, number=1, attempted_at=at, status_code=500)
    return made


def email(customer, status: str, *, at: dt.datetime) -> OutgoingEmail:
    return OutgoingEmail.objects.create(
        owner=customer, kind="low_balance", event_id=uuid.uuid4(), to="a@example.com", subject="s", text="t",
        html="h", status=status, created_at=at,
    )  # fmt: skip


def test_purge_keeps_what_is_recent_or_still_to_be_sent(customer):
    endpoint = webhooks.endpoint_create(owner_id=customer.pk, url="http://127.0.0.1:9/", event_types=["top_up.succeeded"]).endpoint  # fmt: skip
    old = timezone.now() - dt.timedelta(days=31)
    kept = [
        delivery(endpoint, "pending", at=old),  # still to be sent: kept, its old attempt goes
        delivery(endpoint, "succeeded", at=timezone.now()),
    ]
    delivery(endpoint, "succeeded", at=old)
    delivery(endpoint, "failed", at=old)
    kept_emails = [email(customer, "pending", at=old), email(customer, "sent", at=timezone.now())]
    email(customer, "sent", at=old)
    email(customer, "failed", at=old)

    out = StringIO()
    call_command("purge_notifications", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"attempts": 3, "deliveries": 2, "emails": 2, "messages": 2}
    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {d.pk for d in kept}
    assert WebhookAttempt.objects.count() == 1  # the recent delivery's
    assert WebhookMessage.objects.count() == 2
    assert set(OutgoingEmail.objects.values_list("pk", flat=True)) == {e.pk for e in kept_emails}


def test_secrets_are_re_encrypted_under_a_new_first_key(customer):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(IAAS_SECRET_KEYS=[old_key]):
        created = webhooks.endpoint_create(owner_id=customer.pk, url="http://127.0.0.1:9/", event_types=["top_up.succeeded"])  # fmt: skip
        rotated = webhooks.endpoint_rotate_secret(owner_id=customer.pk, endpoint_id=created.endpoint.pk)
    with override_settings(IAAS_SECRET_KEYS=[new_key, old_key]):
        call_command("rotate_secret_keys", stdout=StringIO())
    with override_settings(IAAS_SECRET_KEYS=[new_key]):  # the old key dropped: still readable
        endpoint = WebhookEndpoint.objects.get()
        assert webhooks.signing_secrets(endpoint, now=timezone.now()) == [rotated.secret, created.secret]
    with (
        time_machine.travel(timezone.now() + dt.timedelta(days=2)),
        override_settings(IAAS_SECRET_KEYS=[new_key]),
    ):
        assert webhooks.signing_secrets(endpoint, now=timezone.now()) == [rotated.secret]
