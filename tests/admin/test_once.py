"""Every operator form and action happens once per rendered page: the page carries a
one-time token, and a second submission of it (a double click, a browser retry, a
replayed POST) books or changes nothing more and says "already done", never a second
entry and never a 500."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from iaas.billing.models import Adjustment, LedgerEntry, Refund, TopUp, Wallet
from iaas.cloud.models import Server
from iaas.common.admin import STALE_FORM
from iaas.contracts.models import OutboxMessage
from iaas.hosting.models import Subscription
from iaas.operations.models import UsedOperationToken

ALREADY_DONE = "Already done by this form&#x27;s first submission, nothing done again"
ALREADY_BOOKED = "Already booked by this form&#x27;s first submission"


def tokens_in(page: str) -> list[str]:
    return re.findall(r'name="operation_token" value="([0-9a-f-]{36})"', page)


def act(client, model: str, action: str, pk, token, **extra):
    """Post an action; a confirmed one carries a reason (an operator's suspension asks)."""
    data = {
        "action": action,
        "_selected_action": [pk],
        "operation_token": str(token),
        "reason": "test",
        **extra,
    }
    return client.post(reverse(f"admin:{model}_changelist"), data, follow=True)


def snapshot(model, pk) -> tuple:
    """Everything an action could change: the row, money, events, the admin's log."""
    return (
        model.objects.filter(pk=pk).values().get(),
        LedgerEntry.objects.count(),
        OutboxMessage.objects.count(),
        LogEntry.objects.count(),
    )


# --- The pages carry the token ---------------------------------------------------------------


def test_each_rendering_of_a_form_carries_a_new_token(as_role, books):
    client = as_role("superuser")
    changelist = reverse("admin:cloud_server_changelist")
    first, second = (tokens_in(client.get(changelist).content.decode()) for _ in range(2))
    assert len(first) == len(second) == 1
    assert first != second

    page = client.get(reverse("admin:cloud_server_change", args=[books["server"].pk])).content.decode()
    assert len(set(tokens_in(page))) == 1  # one token for the page's buttons
    assert 'value="suspend_services"' in page

    adjust = client.get(reverse("admin:billing_wallet_adjust", args=[books["wallet"].pk])).content.decode()
    assert len(tokens_in(adjust)) == 1


def test_the_confirmation_page_carries_the_token_forward(as_role, books, published):
    server = books["server"]
    client = as_role("superuser")
    token = uuid.uuid4()
    confirm = act(client, "cloud_server", "end_services", server.pk, token).content.decode()
    assert tokens_in(confirm) == [str(token)]

    act(client, "cloud_server", "end_services", server.pk, token, confirmed="yes")
    replay = act(client, "cloud_server", "end_services", server.pk, token, confirmed="yes")

    assert ALREADY_DONE in replay.content.decode()
    assert Server.objects.get(pk=server.pk).status == "terminated"
    assert sum(event.type_name() == "ServerTerminated" for event in published) == 1


# --- Money forms ---------------------------------------------------------------------------------


def test_a_double_submitted_adjustment_books_once(as_role, books):
    wallet = books["wallet"]
    client = as_role("finance")
    url = reverse("admin:billing_wallet_adjust", args=[wallet.pk])
    (token,) = tokens_in(client.get(url).content.decode())
    form = {"direction": "credit", "amount": "12.50", "reason": "Outage", "operation_token": token}
    entries = LedgerEntry.objects.count()

    first = client.post(url, form)
    second = client.post(url, form, follow=True)

    assert first.status_code == 302
    assert second.redirect_chain == [(reverse("admin:billing_wallet_change", args=[wallet.pk]), 302)]
    assert ALREADY_BOOKED in second.content.decode()
    assert "nothing was booked again" in second.content.decode()
    assert LedgerEntry.objects.count() == entries + 1
    adjustment = Adjustment.objects.get(pk=token)
    assert adjustment.ledger_entry.reference == f"adjustment:{token}"
    balance = wallet.balance
    wallet.refresh_from_db()
    assert wallet.balance == balance + 1250


def test_a_double_submitted_refund_books_once(as_role, books):
    charge = books["hosting_charge"]
    client = as_role("finance")
    url = reverse("admin:billing_settledcharge_refund", args=[charge.pk])
    (token,) = tokens_in(client.get(url).content.decode())
    form = {"amount": "1.00", "reason": "Downtime", "operation_token": token}

    assert client.post(url, form).status_code == 302
    second = client.post(url, form, follow=True)

    page = second.content.decode()
    assert ALREADY_BOOKED in page
    assert "refunded already" not in page
    assert Refund.objects.filter(charge=charge).get().pk == uuid.UUID(token)
    assert LedgerEntry.objects.filter(kind="refund", wallet=charge.wallet).count() == 2  # books' + this


@pytest.mark.parametrize("token", ["", "not-a-uuid"])
def test_a_money_form_without_a_valid_token_books_nothing(as_role, books, token):
    wallet = books["wallet"]
    entries = LedgerEntry.objects.count()
    response = as_role("finance").post(
        reverse("admin:billing_wallet_adjust", args=[wallet.pk]),
        {"direction": "credit", "amount": "1", "reason": "x", "operation_token": token},
    )
    assert response.status_code == 200
    assert "reload the page" in response.content.decode()
    assert LedgerEntry.objects.count() == entries


def test_a_refused_submission_can_be_submitted_again(as_role, books, deliver):
    """Nothing was booked, so the same page may try again (and succeed once the
    services released what they held)."""
    wallet = books["wallet"]
    client = as_role("finance")
    url = reverse("admin:billing_wallet_adjust", args=[wallet.pk])
    (token,) = tokens_in(client.get(url).content.decode())
    OutboxMessage.objects.filter(pk=books["failed_event"].pk).update(status=OutboxMessage.Status.PENDING)
    form = {
        "direction": "debit",
        "amount": f"{wallet.balance // 100}.{wallet.balance % 100:02d}",
        "reason": "Chargeback",
        "operation_token": token,
    }

    refused = client.post(url, form)
    assert refused.status_code == 200
    assert "retry in a few seconds" in refused.content.decode()
    assert OutboxMessage.objects.filter(event_type="ReleaseRequested", status="pending").exists()
    assert tokens_in(refused.content.decode()) == [token]  # the page keeps its token

    deliver()  # the contexts release their idle allowance; Billing applies the releases
    wallet.refresh_from_db()
    assert wallet.reserved == 0

    retried = client.post(url, form, follow=True)
    assert "Debited" in retried.content.decode()
    wallet.refresh_from_db()
    assert wallet.balance == 0
    assert Adjustment.objects.get(pk=token).amount < 0


# --- Actions --------------------------------------------------------------------------------------


def pending_top_up(wallet) -> TopUp:
    return TopUp.objects.create(
        wallet=wallet, amount=700, currency=wallet.currency, reference="bank:42", provider="bank"
    )


# (admin page, action, the row, actions that set the row up, the action that undoes it)
ACTIONS = [
    ("cloud_server", "suspend_services", "server", [], "resume_services"),
    ("cloud_server", "resume_services", "server", ["suspend_services"], "suspend_services"),
    ("cloud_server", "end_services", "server", [], None),
    ("hosting_subscription", "suspend_services", "subscription", [], "resume_services"),
    (
        "hosting_subscription",
        "resume_services",
        "subscription",
        ["suspend_services"],
        "suspend_services",
    ),
    ("hosting_subscription", "end_services", "subscription", [], None),
    ("billing_wallet", "freeze_wallets", "wallet", [], "unfreeze_wallets"),
    ("billing_wallet", "unfreeze_wallets", "wallet", ["freeze_wallets"], "freeze_wallets"),
    ("billing_topup", "confirm_top_ups", "top_up", [], None),
    ("billing_topup", "fail_top_ups", "top_up", [], None),
]
MODELS = {"server": Server, "subscription": Subscription, "wallet": Wallet, "top_up": TopUp}


@pytest.mark.parametrize(("page", "action", "row", "setup", "undo"), ACTIONS, ids=[a[1] for a in ACTIONS])
def test_an_action_submitted_twice_changes_once(as_role, books, page, action, row, setup, undo):
    obj = pending_top_up(books["wallet"]) if row == "top_up" else books[row]
    model = MODELS[row]
    client = as_role("superuser")
    for step in setup:
        act(client, page, step, obj.pk, uuid.uuid4(), confirmed="yes")
    token = uuid.uuid4()

    first = act(client, page, action, obj.pk, token, confirmed="yes").content.decode()
    assert "alert-success" in first or 'class="success"' in first, first
    after_first = snapshot(model, obj.pk)
    twice = act(client, page, action, obj.pk, token, confirmed="yes").content.decode()

    assert ALREADY_DONE in twice
    assert snapshot(model, obj.pk) == after_first


@pytest.mark.parametrize(
    ("page", "action", "row", "setup", "undo"),
    [a for a in ACTIONS if a[4]],
    ids=[a[1] for a in ACTIONS if a[4]],
)
def test_a_replayed_action_after_it_was_undone_does_nothing(as_role, books, page, action, row, setup, undo):
    """Suspend, resume, then the browser replays the suspend: the row stays resumed."""
    obj = books[row]
    model = MODELS[row]
    client = as_role("superuser")
    for step in setup:
        act(client, page, step, obj.pk, uuid.uuid4(), confirmed="yes")
    token = uuid.uuid4()
    act(client, page, action, obj.pk, token, confirmed="yes")
    act(client, page, undo, obj.pk, uuid.uuid4(), confirmed="yes")
    undone = snapshot(model, obj.pk)

    replay = act(client, page, action, obj.pk, token, confirmed="yes").content.decode()

    assert ALREADY_DONE in replay
    assert snapshot(model, obj.pk) == undone


def test_a_confirmed_top_up_replayed_credits_once(as_role, books):
    top_up = pending_top_up(books["wallet"])
    client = as_role("superuser")
    token = uuid.uuid4()
    for _ in range(3):
        act(client, "billing_topup", "confirm_top_ups", top_up.pk, token, confirmed="yes")
    assert LedgerEntry.objects.filter(kind="top_up", source_id=top_up.pk).count() == 1
    assert UsedOperationToken.objects.filter(token=token).count() == 1


def test_an_action_without_a_token_changes_nothing(as_role, books):
    server = books["server"]
    before = snapshot(Server, server.pk)
    response = act(as_role("superuser"), "cloud_server", "suspend_services", server.pk, "", confirmed="yes")
    assert STALE_FORM.replace("'", "&#x27;") in response.content.decode()
    assert snapshot(Server, server.pk) == before


def test_a_refused_action_leaves_its_token_unused(as_role, books):
    """Nothing changed, so nothing is "already done": the same page tries again."""
    server = books["server"]
    client = as_role("superuser")
    token = uuid.uuid4()
    refused = act(client, "cloud_server", "resume_services", server.pk, token).content.decode()
    assert "Only a suspended server can be resumed" in refused
    assert not UsedOperationToken.objects.filter(token=token).exists()


def test_one_token_counts_per_row(as_role, books):
    """The same submission for two rows: each row once, whichever rows ran before."""
    client = as_role("superuser")
    wallet = books["wallet"]
    other = pending_top_up(wallet)
    token = uuid.uuid4()
    act(client, "billing_topup", "fail_top_ups", other.pk, token)
    second = TopUp.objects.create(
        wallet=wallet, amount=300, currency=wallet.currency, reference="bank:43", provider="bank"
    )
    response = client.post(
        reverse("admin:billing_topup_changelist"),
        {"action": "fail_top_ups", "_selected_action": [other.pk, second.pk], "operation_token": str(token)},
        follow=True,
    ).content.decode()
    assert ALREADY_DONE in response
    assert "Marked failed: " in response
    assert TopUp.objects.get(pk=second.pk).status == "failed"


def test_a_replayed_delivery_retry_retries_nothing_more(as_role, books):
    failed = books["failed_event"]
    client = as_role("finance")
    token = uuid.uuid4()
    act(client, "contracts_outboxmessage", "retry_deliveries", failed.pk, token, index=0)
    # It failed again since: an operator looks at it, a replayed page must not retry it.
    OutboxMessage.objects.filter(pk=failed.pk).update(status=OutboxMessage.Status.FAILED, attempts=99)

    replay = act(client, "contracts_outboxmessage", "retry_deliveries", failed.pk, token, index=0)

    assert "Already retried by this form&#x27;s first submission" in replay.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (OutboxMessage.Status.FAILED, 99)


def test_old_used_tokens_are_purged(db, settings):
    import datetime as dt

    from django.core.management import call_command
    from django.utils import timezone

    settings.IAAS_OPERATION_TOKEN_RETENTION_DAYS = 30
    old = UsedOperationToken.objects.create(
        token=uuid.uuid4(),
        target="cloud.server:1:suspend_services",
        used_at=timezone.now() - dt.timedelta(days=31),
    )
    recent = UsedOperationToken.objects.create(token=uuid.uuid4(), target="cloud.server:1:suspend_services")
    out = io.StringIO()

    call_command("purge_operation_tokens", "--dry-run", stdout=out)
    assert "1 used operation tokens would be deleted" in out.getvalue()
    call_command("purge_operation_tokens", stdout=out)

    assert list(UsedOperationToken.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not UsedOperationToken.objects.filter(pk=old.pk).exists()
