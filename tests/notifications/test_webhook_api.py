"""The customer's webhook endpoints and deliveries over the API (API.md's additions):
the secret shown once, 400 unsafe_url, other customers' objects are 404s, filters and
redelivery."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction
from django.test import override_settings

from iaas.common import outgoing
from iaas.contracts import bus
from iaas.notifications import catalog, secrets, sender
from iaas.notifications.models import WebhookDelivery, WebhookEndpoint
from tests.api.conftest import assert_problem
from tests.notifications.receiver import Receiver, spec_verify
from tests.notifications.test_webhook_delivery import sample_events

pytestmark = pytest.mark.django_db

ENDPOINTS = "/api/v1/webhooks/endpoints/"
DELIVERIES = "/api/v1/webhooks/deliveries/"
PUBLIC = "https://hooks.example.com/iaas"


@pytest.fixture(autouse=True)
def _public_names(monkeypatch):
    """hooks.example.com resolves to a public address; nothing here connects."""
    monkeypatch.setattr(outgoing, "resolve", lambda host, port: ["93.184.215.14"])


def create(api, **body):
    return api.post(ENDPOINTS, {"url": PUBLIC, "event_types": ["top_up.succeeded"], **body}, format="json")


def test_an_endpoint_is_made_with_a_secret_shown_once(api):
    response = create(api, description="prod")
    assert response.status_code == 201
    body = response.json()
    assert body["secret"].startswith(secrets.SECRET_PREFIX)
    assert (body["url"], body["event_types"], body["enabled"], body["description"]) == (
        PUBLIC,
        ["top_up.succeeded"],
        True,
        "prod",
    )
    shown = api.get(f"{ENDPOINTS}{body['id']}/").json()
    assert "secret" not in shown
    assert [e["id"] for e in api.get(ENDPOINTS).json()["results"]] == [body["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_types": []}, "event_types"),
        ({"event_types": ["no.such"]}, "event_types.0"),
        ({"event_types": "top_up.succeeded"}, "event_types"),
        ({"url": 12}, "url"),
        ({"enabled": "true"}, "enabled"),
    ],
)
def test_bad_fields_are_400s_and_make_nothing(api, body, field):
    response = create(api, **body)
    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]
    assert not WebhookEndpoint.objects.exists()


@override_settings(IAAS_OUTGOING_ALLOW_PRIVATE=False)
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://169.254.169.254/latest",
        "https://[::1]/",
        "ftp://x.example/",
    ],
)
def test_an_unsafe_url_is_a_400_unsafe_url(api, url):
    assert_problem(create(api, url=url), 400, "unsafe_url")
    assert not WebhookEndpoint.objects.exists()


@override_settings(IAAS_OUTGOING_ALLOW_PRIVATE=False)
def test_a_name_resolving_to_a_private_address_is_refused_at_registration(api, monkeypatch):
    monkeypatch.setattr(outgoing, "resolve", lambda host, port: ["10.0.0.7"])
    assert_problem(create(api), 400, "unsafe_url")


def test_another_customers_endpoint_is_a_404(api, other_api):
    endpoint_id = create(api).json()["id"]
    for call in (
        lambda: other_api.get(f"{ENDPOINTS}{endpoint_id}/"),
        lambda: other_api.patch(f"{ENDPOINTS}{endpoint_id}/", {"enabled": False}, format="json"),
        lambda: other_api.delete(f"{ENDPOINTS}{endpoint_id}/"),
        lambda: other_api.post(f"{ENDPOINTS}{endpoint_id}/rotate-secret/"),
    ):
        assert_problem(call(), 404, "not_found")
    assert other_api.get(ENDPOINTS).json()["results"] == []
    assert WebhookEndpoint.objects.get().enabled


def test_patch_changes_only_what_it_names_and_enabling_clears_a_failure(api):
    endpoint_id = create(api).json()["id"]
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        enabled=False, disabled_reason="failing", failing_since="2026-01-01T00:00:00Z"
    )
    response = api.patch(
        f"{ENDPOINTS}{endpoint_id}/", {"enabled": True, "event_types": list(catalog.NAMES)}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["enabled"], body["disabled_reason"], body["failing_since"], body["url"]) == (
        True,
        "",
        None,
        PUBLIC,
    )
    assert body["event_types"] == sorted(catalog.NAMES)


def test_rotation_answers_a_new_secret_and_delete_removes_the_endpoint(api):
    created = create(api).json()
    rotated = api.post(f"{ENDPOINTS}{created['id']}/rotate-secret/")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert api.delete(f"{ENDPOINTS}{created['id']}/").status_code == 204
    assert_problem(api.get(f"{ENDPOINTS}{created['id']}/"), 404, "not_found")


@override_settings(IAAS_RELAY_EVENTS=False)
def test_deliveries_are_listed_filtered_and_redelivered_with_the_same_webhook_id(api, customer, other_api):
    receiver = Receiver(statuses=[500]).start()
    try:
        created = api.post(
            ENDPOINTS, {"url": receiver.url, "event_types": list(catalog.NAMES)}, format="json"
        ).json()
        samples = sample_events(customer.pk)
        with transaction.atomic():
            bus.publish(samples["top_up.succeeded"], samples["server.suspended"])
        bus.deliver_pending()
        sender.send_due()  # the first fails (500), the second succeeds

        listed = api.get(DELIVERIES).json()["results"]
        assert {d["event_type"] for d in listed} == {"top_up.succeeded", "server.suspended"}
        failed = api.get(DELIVERIES, {"status": "pending"}).json()["results"]
        assert len(failed) == 1
        assert failed[0]["recent_attempts"][0]["status_code"] == 500
        assert api.get(DELIVERIES, {"event_type": "server.suspended"}).json()["results"][0]["status"] in (
            "succeeded",
            "pending",
        )
        assert len(api.get(DELIVERIES, {"endpoint": created["id"]}).json()["results"]) == 2
        assert api.get(DELIVERIES, {"endpoint": str(uuid.uuid4())}).json()["results"] == []
        assert_problem(api.get(DELIVERIES, {"status": "bogus"}), 400, "validation_error")
        assert other_api.get(DELIVERIES).json()["results"] == []

        target = listed[0]
        assert_problem(other_api.post(f"{DELIVERIES}{target['id']}/redeliver/"), 404, "not_found")
        again = api.post(f"{DELIVERIES}{target['id']}/redeliver/")
        assert again.status_code == 202
        assert again.json()["webhook_id"] == target["webhook_id"]
        sent_before = len(receiver.requests)
        sender.send_due()
    finally:
        receiver.stop()
    redelivered = receiver.requests[sent_before:]
    assert [r.headers["webhook-id"] for r in redelivered] == [target["webhook_id"]]
    assert spec_verify(created["secret"], redelivered[0])
    assert WebhookDelivery.objects.get(pk=target["id"]).redeliveries == 1


def test_the_schema_describes_the_webhook_endpoints(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    for path in (
        "/api/v1/webhooks/endpoints/",
        "/api/v1/webhooks/endpoints/{id}/",
        "/api/v1/webhooks/endpoints/{id}/rotate-secret/",
        "/api/v1/webhooks/deliveries/",
        "/api/v1/webhooks/deliveries/{id}/redeliver/",
    ):
        assert path in schema["paths"], path
