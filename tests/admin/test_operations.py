"""Operator actions on servers and subscriptions go through the contexts' services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from iaas.cloud.models import Server
from iaas.hosting.models import Subscription


def act(client, model: str, action: str, pk, **extra):
    data = {"action": action, "_selected_action": [pk], **extra}
    return client.post(reverse(f"admin:{model}_changelist"), data, follow=True)


@pytest.fixture
def events(published):
    """How many events of a type the services published."""
    return lambda type_name: sum(event.type_name() == type_name for event in published)


def test_suspend_resume_and_terminate_a_server(as_role, books, events):
    server = books["server"]
    client = as_role("superuser")

    response = act(client, "cloud_server", "suspend_servers", server.pk)
    assert "Suspended: web-1" in response.content.decode()
    server.refresh_from_db()
    assert server.status == "suspended"
    assert events("ServerSuspended") == 1

    act(client, "cloud_server", "suspend_servers", server.pk)  # refused, reported, harmless
    assert events("ServerSuspended") == 1

    act(client, "cloud_server", "resume_servers", server.pk)
    server.refresh_from_db()
    assert server.status == "active"
    assert events("ServerResumed") == 1

    confirm = act(client, "cloud_server", "terminate_servers", server.pk)
    assert "terminated for good" in confirm.content.decode()
    server.refresh_from_db()
    assert server.status == "active"  # not before the operator confirms
    act(client, "cloud_server", "terminate_servers", server.pk, confirmed="yes")
    server.refresh_from_db()
    assert server.status == "terminated"
    assert events("ServerTerminated") == 1


def test_a_refused_operation_is_reported(as_role, books):
    server = books["server"]
    response = act(as_role("superuser"), "cloud_server", "resume_servers", server.pk)
    assert "Only a suspended server can be resumed" in response.content.decode()
    assert Server.objects.get(pk=server.pk).status == "active"


def test_suspend_resume_and_cancel_a_subscription_from_its_page(as_role, books, events):
    subscription = books["subscription"]
    client = as_role("superuser")
    page_url = reverse("admin:hosting_subscription_change", args=[subscription.pk])
    page = client.get(page_url).content.decode()
    assert 'value="suspend_subscriptions"' in page

    response = act(client, "hosting_subscription", "suspend_subscriptions", subscription.pk, _next=page_url)
    assert response.redirect_chain[-1][0] == page_url
    assert Subscription.objects.get(pk=subscription.pk).status == "suspended"
    act(client, "hosting_subscription", "resume_subscriptions", subscription.pk)
    assert Subscription.objects.get(pk=subscription.pk).status == "active"
    act(client, "hosting_subscription", "cancel_subscriptions", subscription.pk, confirmed="yes")
    assert Subscription.objects.get(pk=subscription.pk).status == "cancelled"
    assert events("SubscriptionCancelled") == 1


def test_support_sees_no_operation_buttons(as_role, books):
    page = as_role("support").get(reverse("admin:cloud_server_change", args=[books["server"].pk]))
    assert 'value="suspend_servers"' not in page.content.decode()
