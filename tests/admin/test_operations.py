"""Operator actions on servers and subscriptions go through the contexts' services."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from iaas.cloud.models import Allowance, Server
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

    asked = act(client, "cloud_server", "suspend_services", server.pk)
    assert "Reason (kept with the suspension)" in asked.content.decode()  # asked first
    empty = act(client, "cloud_server", "suspend_services", server.pk, confirmed="yes", reason=" ")
    assert "Give a reason" in empty.content.decode()
    assert Server.objects.get(pk=server.pk).status == "active"

    response = act(client, "cloud_server", "suspend_services", server.pk, confirmed="yes", reason="abuse #7")
    assert "Suspended: web-1" in response.content.decode()
    server.refresh_from_db()
    assert (server.status, server.suspension_causes) == ("suspended", ["operator"])
    assert server.operator_reason == "abuse #7 (operator:root)"
    assert events("ServerSuspended") == 1
    page = client.get(reverse("admin:cloud_server_change", args=[server.pk])).content.decode()
    assert "Operator: abuse #7 (operator:root)" in page

    act(client, "cloud_server", "suspend_services", server.pk, confirmed="yes", reason="again")  # refused
    assert events("ServerSuspended") == 1

    act(client, "cloud_server", "resume_services", server.pk)
    server.refresh_from_db()
    assert (server.status, server.suspension_causes) == ("active", [])
    assert events("ServerResumed") == 1

    confirm = act(client, "cloud_server", "end_services", server.pk)
    assert "terminated for good" in confirm.content.decode()
    server.refresh_from_db()
    assert server.status == "active"  # not before the operator confirms
    act(client, "cloud_server", "end_services", server.pk, confirmed="yes")
    server.refresh_from_db()
    assert server.status == "terminated"
    assert events("ServerTerminated") == 1


def test_lifting_the_hold_of_an_unpaid_server_leaves_it_to_the_batch(as_role, books):
    server = books["server"]
    stopped = timezone.now()
    Server.objects.filter(pk=server.pk).update(status="suspended", suspended_at=stopped, unpaid_since=stopped)
    client = as_role("superuser")
    act(client, "cloud_server", "suspend_services", server.pk, confirmed="yes", reason="legal hold")
    act(client, "cloud_server", "lift_operator_hold", server.pk)
    server.refresh_from_db()
    assert (server.status, server.suspension_causes) == ("suspended", ["unpaid"])
    listing = client.get(reverse("admin:cloud_server_changelist") + "?cause=unpaid").content.decode()
    assert "web-1" in listing


def test_a_resume_the_wallet_cannot_pay_is_reported_and_changes_nothing(as_role, books):
    server = books["server"]
    stopped = timezone.now() - dt.timedelta(hours=3)
    Server.objects.filter(pk=server.pk).update(
        status="suspended", suspended_at=stopped, unpaid_since=stopped, paid_until=stopped
    )
    wallet = books["wallet"]
    Allowance.objects.filter(pk=wallet.pk).update(blocked=True)  # as a freeze would
    response = act(as_role("superuser"), "cloud_server", "resume_services", server.pk)
    assert "frozen or closed" in response.content.decode()
    server.refresh_from_db()
    assert (server.status, server.suspension_causes) == ("suspended", ["unpaid"])


def test_a_refused_operation_is_reported(as_role, books):
    server = books["server"]
    response = act(as_role("superuser"), "cloud_server", "resume_services", server.pk)
    assert "Only a suspended server can be resumed" in response.content.decode()
    assert Server.objects.get(pk=server.pk).status == "active"


def test_suspend_resume_and_cancel_a_subscription_from_its_page(as_role, books, events):
    subscription = books["subscription"]
    client = as_role("superuser")
    page_url = reverse("admin:hosting_subscription_change", args=[subscription.pk])
    page = client.get(page_url).content.decode()
    assert 'value="suspend_services"' in page

    response = act(
        client,
        "hosting_subscription",
        "suspend_services",
        subscription.pk,
        _next=page_url,
        confirmed="yes",
        reason="customer asked",
    )
    assert response.redirect_chain[-1][0] == page_url
    assert Subscription.objects.get(pk=subscription.pk).status == "suspended"
    act(client, "hosting_subscription", "resume_services", subscription.pk)
    assert Subscription.objects.get(pk=subscription.pk).status == "active"
    act(client, "hosting_subscription", "end_services", subscription.pk, confirmed="yes")
    assert Subscription.objects.get(pk=subscription.pk).status == "cancelled"
    assert events("SubscriptionCancelled") == 1


def test_support_sees_no_operation_buttons(as_role, books):
    page = as_role("support").get(reverse("admin:cloud_server_change", args=[books["server"].pk]))
    assert 'value="suspend_services"' not in page.content.decode()
