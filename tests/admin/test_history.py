"""The history of operators' changes from the console: each write path the admin offers
(a plan's save, a wallet's freeze and unfreeze, a user's groups) records exactly one
change with the operator, before and after; each object's page shows its history; the
list of every change is read-only and can be filtered and searched."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.urls import reverse

from iaas.audit.models import ChangeRecord
from iaas.audit.services import Change, record_changes
from iaas.cloud.models import ServerPlan
from iaas.hosting.models import HostingPlan
from iaas.operations.roles import FINANCE, SUPPORT

PLAN = "s-1vcpu-1gb"


def records(obj_type: str, obj_id) -> list[ChangeRecord]:
    return list(ChangeRecord.objects.filter(obj_type=obj_type, obj_id=str(obj_id)).order_by("id"))


def plan_form(client, plan_id: str, model: str = "cloud_serverplan") -> dict:
    """The plan's change form as the browser would post it back."""
    form = client.get(reverse(f"admin:{model}_change", args=[plan_id])).context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data["is_active"] = "on" if data["is_active"] else ""
    return data


@pytest.mark.parametrize(
    ("model", "plan_model", "plan_id", "price"),
    [
        ("cloud_serverplan", ServerPlan, PLAN, "price_per_hour"),
        ("hosting_hostingplan", HostingPlan, "web-starter", "price_per_month"),
    ],
)
def test_a_price_change_in_the_admin_is_recorded_once_with_the_changed_fields(
    as_role, books, superuser, model, plan_model, plan_id, price
):
    client = as_role("superuser")
    old = getattr(plan_model.objects.get(pk=plan_id), price)
    data = plan_form(client, plan_id, model)
    data[price] = old + 1

    response = client.post(reverse(f"admin:{model}_change", args=[plan_id]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    [record] = records(plan_model._meta.label_lower, plan_id)
    assert record.action == "change"
    assert (record.before, record.after) == ({price: old}, {price: old + 1})
    assert (record.actor, record.actor_label) == (superuser, "root")

    # Saved again unchanged: nothing to record.
    client.post(reverse(f"admin:{model}_change", args=[plan_id]), plan_form(client, plan_id, model))
    assert len(records(plan_model._meta.label_lower, plan_id)) == 1


def test_retiring_a_plan_and_creating_one_are_recorded(as_role, books, superuser):
    client = as_role("superuser")
    data = plan_form(client, PLAN)
    data["is_active"] = ""
    client.post(reverse("admin:cloud_serverplan_change", args=[PLAN]), data)
    [retired] = records("cloud.serverplan", PLAN)
    assert (retired.before, retired.after) == ({"is_active": True}, {"is_active": False})

    new = {**plan_form(client, PLAN), "id": "s-64vcpu", "name": "Huge", "is_active": "on", "currency": "EUR"}
    response = client.post(reverse("admin:cloud_serverplan_add"), new)
    assert response.status_code == 302, response.context["adminform"].form.errors
    [created] = records("cloud.serverplan", "s-64vcpu")
    assert created.action == "create"
    assert created.before == {}
    assert created.after["id"] == "s-64vcpu"
    assert created.after["name"] == "Huge"
    assert created.after["price_per_hour"] == int(new["price_per_hour"])
    assert created.actor == superuser


def act(client, action: str, pk):
    return client.post(
        reverse("admin:billing_wallet_changelist"), {"action": action, "_selected_action": [pk]}, follow=True
    )


def test_freeze_and_unfreeze_from_the_admin_are_recorded_with_the_operator(as_role, books, superuser):
    wallet = books["wallet"]
    client = as_role("superuser")

    assert "Frozen" in act(client, "freeze_wallets", wallet.pk).content.decode()
    act(client, "freeze_wallets", wallet.pk)  # already frozen: no change, no record
    assert "Unfrozen" in act(client, "unfreeze_wallets", wallet.pk).content.decode()

    history = records("billing.wallet", wallet.pk)
    assert [(r.action, r.before, r.after, r.actor) for r in history] == [
        ("freeze", {"status": "active"}, {"status": "frozen"}, superuser),
        ("unfreeze", {"status": "frozen"}, {"status": "active"}, superuser),
    ]


def test_support_cannot_freeze_and_nothing_is_recorded(as_role, books):
    wallet = books["wallet"]
    response = act(as_role("support"), "freeze_wallets", wallet.pk)
    assert response.status_code == 403
    assert records("billing.wallet", wallet.pk) == []


def user_form(client, user) -> dict:
    form = client.get(reverse("admin:auth_user_change", args=[user.pk])).context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if name in ("groups", "user_permissions"):
            data[name] = [str(v) for v in value or []]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif name in ("date_joined", "last_login"):
            data[f"{name}_0"] = value.strftime("%Y-%m-%d") if value else ""
            data[f"{name}_1"] = value.strftime("%H:%M:%S") if value else ""
        elif name != "password":
            data[name] = value or ""
    return data


def save_user(client, user, **changes):
    data = {**user_form(client, user), **changes}
    response = client.post(reverse("admin:auth_user_change", args=[user.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors


def test_group_changes_on_a_users_page_are_recorded_once_per_save(as_role, books, superuser, support):
    client = as_role("superuser")
    finance, support_group = Group.objects.get(name=FINANCE), Group.objects.get(name=SUPPORT)

    save_user(client, support, groups=[str(support_group.pk), str(finance.pk)])  # add Finance
    save_user(client, support, groups=[str(finance.pk)])  # remove Support
    save_user(client, support, groups=[str(support_group.pk)])  # swap back: one save, one record
    save_user(client, support)  # no change

    history = records("auth.user", support.pk)
    assert [(r.action, r.before, r.after) for r in history] == [
        ("change_access", {"groups": ["Support"]}, {"groups": ["Finance", "Support"]}),
        ("change_access", {"groups": ["Finance", "Support"]}, {"groups": ["Finance"]}),
        ("change_access", {"groups": ["Finance"]}, {"groups": ["Support"]}),
    ]
    assert {(r.actor, r.actor_label) for r in history} == {(superuser, "root")}


def test_granting_superuser_is_recorded_with_the_groups(as_role, books, support):
    client = as_role("superuser")
    save_user(client, support, is_superuser="on", groups=[])
    [record] = records("auth.user", support.pk)
    assert record.before == {"is_superuser": False, "groups": ["Support"]}
    assert record.after == {"is_superuser": True, "groups": []}


@pytest.mark.parametrize("role", ["superuser", "finance", "support"])
def test_each_objects_page_shows_its_history(as_role, books, superuser, role):
    wallet = books["wallet"]
    act(as_role("superuser"), "freeze_wallets", wallet.pk)
    client = as_role(role)

    page = client.get(reverse("admin:billing_wallet_change", args=[wallet.pk])).content.decode()
    assert "History of changes" in page
    assert "<td>freeze</td>" in page
    assert "active → frozen" in page
    assert ">root</a>" in page

    page = client.get(reverse("admin:cloud_serverplan_change", args=[PLAN])).content.decode()
    assert "History of changes" in page
    assert "No changes recorded." in page


def test_a_run_shows_by_its_label_and_a_long_history_links_to_the_list(as_role, books):
    server = books["server"]
    with transaction.atomic():
        record_changes(
            [
                Change(
                    obj_type="cloud.server",
                    obj_id=server.pk,
                    action="suspend" if i % 2 == 0 else "resume",
                    before={"status": "active"},
                    after={"status": "suspended"},
                    actor_label="bill_usage",
                    reason="insufficient_funds",
                )
                for i in range(21)
            ]
        )
    page = as_role("support").get(reverse("admin:cloud_server_change", args=[server.pk])).content.decode()
    assert page.count("<td>bill_usage</td>") == 20
    assert "insufficient_funds" in page
    assert "Older changes" in page


@pytest.mark.parametrize("role", ["superuser", "finance", "support"])
def test_the_list_of_changes_filters_searches_and_edits_nothing(as_role, books, role):
    wallet = books["wallet"]
    act(as_role("superuser"), "freeze_wallets", wallet.pk)
    client = as_role(role)
    changelist = reverse("admin:audit_changerecord_changelist")

    assert client.get(changelist).context["cl"].result_count == 1
    assert client.get(changelist, {"q": str(wallet.pk)}).context["cl"].result_count == 1
    assert client.get(changelist, {"q": "nothing-like-it"}).context["cl"].result_count == 0
    assert client.get(changelist, {"obj_type": "billing.wallet"}).context["cl"].result_count == 1
    assert client.get(changelist, {"obj_type": "cloud.server"}).context["cl"].result_count == 0
    record = ChangeRecord.objects.get()
    assert client.get(changelist, {"actor__id__exact": record.actor_id}).context["cl"].result_count == 1

    page = client.get(reverse("admin:audit_changerecord_change", args=[record.pk]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.get(reverse("admin:audit_changerecord_add")).status_code == 403
    assert client.get(reverse("admin:audit_changerecord_delete", args=[record.pk])).status_code == 403
