"""The README's receiving end, run as written: it accepts a delivery we signed and
refuses one signed with another secret, or a body changed on the way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import transaction
from django.test import RequestFactory, override_settings

from iaas.contracts import bus
from iaas.notifications import webhooks
from iaas.notifications.models import WebhookDelivery
from tests.notifications.test_webhook_delivery import sample_events

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver(seen: list):
    text = README.read_text()
    [code] = re.findall(r"The receiving end, in a few lines.*?```python\n(.*?)```", text, re.S)
    ids: set[str] = set()

    def already_seen(event_id: str) -> bool:  # the receiver's own record of ids it handled
        known = event_id in ids
        ids.add(event_id)
        return known

    namespace = {"already_seen": already_seen, "handle": lambda kind, obj: seen.append((kind, obj))}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["iaas_webhook"]


def signed_request(customer) -> tuple:
    created = webhooks.endpoint_create(
        owner_id=customer.pk, url="http://127.0.0.1:9/", event_types=["top_up.succeeded"]
    )
    with transaction.atomic(), override_settings(IAAS_RELAY_EVENTS=False):
        bus.publish(sample_events(customer.pk)["top_up.succeeded"])
    with override_settings(IAAS_RELAY_EVENTS=False):
        bus.deliver_pending()
    request = webhooks.request_for(WebhookDelivery.objects.select_related("message", "endpoint").get())
    return created.secret, request


def post(view, request, *, body: bytes | None = None):
    headers = {
        f"HTTP_{name.upper().replace('-', '_')}": value
        for name, value in request.headers.items()
        if name != "content-type"
    }
    return view(
        RequestFactory().post(
            "/hooks/iaas", data=body or request.body, content_type="application/json", **headers
        )
    )


def test_the_readme_receiver_accepts_our_delivery_once_and_refuses_forgeries(customer):
    secret, request = signed_request(customer)
    seen = []
    with override_settings(IAAS_WEBHOOK_SECRET=secret):
        view = readme_receiver(seen)
        assert post(view, request).status_code == 204
        assert post(view, request).status_code == 204  # delivered again: handled once
        assert post(view, request, body=request.body.replace(b"5000", b"9000")).status_code == 400
    assert [kind for kind, _ in seen] == ["top_up.succeeded"]
    with override_settings(IAAS_WEBHOOK_SECRET="whsec_" + "QUFB" * 8):
        assert post(readme_receiver([]), request).status_code == 400
