"""A Finance operator's adjustment: one ledger entry through Billing's service, with the
reason and the operator's name, under the same invariants; a refusal changes nothing."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from iaas.billing.models import Adjustment, LedgerEntry
from iaas.contracts.models import OutboxMessage
from iaas.operations.reconciliation import reconcile


def adjust(client, wallet, **data):
    return client.post(reverse("admin:billing_wallet_adjust", args=[wallet.pk]), data)


def state(wallet):
    wallet.refresh_from_db()
    return (
        wallet.balance,
        wallet.reserved,
        wallet.ledger_sequence,
        LedgerEntry.objects.count(),
        Adjustment.objects.count(),
        OutboxMessage.objects.count(),
    )


def assert_i1_to_i3_hold():
    report = reconcile()
    for name in ("I1", "I2", "I3"):
        assert report.violations[name] == [], report.as_dict()


@pytest.mark.parametrize(
    ("direction", "typed", "signed"), [("credit", "12.50", 1250), ("debit", "0.99", -99)]
)
def test_an_adjustment_writes_exactly_one_ledger_entry(as_role, books, finance, direction, typed, signed):
    wallet = books["wallet"]
    balance, entries = wallet.balance, set(LedgerEntry.objects.values_list("pk", flat=True))

    response = adjust(as_role("finance"), wallet, direction=direction, amount=typed, reason="Outage refund")

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:billing_wallet_change", args=[wallet.pk])
    new = LedgerEntry.objects.exclude(pk__in=entries)
    assert new.count() == 1
    entry = new.get()
    assert (entry.kind, entry.amount, entry.created_by) == ("adjustment", signed, finance)
    assert entry.description == "Adjustment: Outage refund"
    assert entry.balance_after == balance + signed
    adjustment = Adjustment.objects.get(ledger_entry=entry)
    assert (adjustment.amount, adjustment.reason, adjustment.created_by) == (signed, "Outage refund", finance)
    wallet.refresh_from_db()
    assert wallet.balance == balance + signed
    assert_i1_to_i3_hold()
    assert LogEntry.objects.filter(user=finance, object_id=str(wallet.pk)).exists()


def test_the_wallet_page_shows_the_new_entry(as_role, books):
    wallet = books["wallet"]
    client = as_role("finance")
    response = client.post(
        reverse("admin:billing_wallet_adjust", args=[wallet.pk]),
        {"direction": "credit", "amount": "7", "reason": "Promised credit"},
        follow=True,
    )
    page = response.content.decode()
    assert "Credited 7.00 EUR" in page
    assert "Adjustment: Promised credit" in page


def test_a_debit_beyond_the_available_balance_is_refused_and_changes_nothing(as_role, books):
    wallet = books["wallet"]
    before = state(wallet)
    events_before = set(OutboxMessage.objects.values_list("pk", flat=True))
    assert wallet.reserved > 0
    # The whole balance: more than is available, because the services hold a part.
    typed = f"{wallet.balance // 100}.{wallet.balance % 100:02d}"

    response = adjust(as_role("finance"), wallet, direction="debit", amount=typed, reason="Chargeback")

    assert response.status_code == 200
    page = response.content.decode()
    assert (
        f"A debit of {wallet.money(wallet.balance)} exceeds the available {wallet.money(wallet.available)}"
        in page
    )
    assert "being asked to release the funds they hold idle; retry in a few seconds" in page
    # No money moved; the only thing written is the request for the held funds back,
    # published after the refused debit rolled back.
    assert state(wallet)[:5] == before[:5]
    assert set(OutboxMessage.objects.exclude(pk__in=events_before).values_list("event_type", flat=True)) == {
        "ReleaseRequested"
    }
    assert_i1_to_i3_hold()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"direction": "credit", "amount": "5", "reason": "  "}, "This field is required"),
        ({"direction": "credit", "amount": "1.234", "reason": "x"}, "At most 2 decimals"),
        ({"direction": "credit", "amount": "-5", "reason": "x"}, "Enter a positive amount"),
        ({"direction": "credit", "amount": "1e3", "reason": "x"}, "Enter a positive amount"),
        ({"direction": "credit", "amount": "0.00", "reason": "x"}, "never zero"),
        ({"direction": "credit", "amount": "2000000", "reason": "x"}, "At most"),
        ({"direction": "sideways", "amount": "5", "reason": "x"}, "Select a valid choice"),
    ],
)
def test_a_malformed_adjustment_is_refused_and_changes_nothing(as_role, books, data, message):
    wallet = books["wallet"]
    before = state(wallet)
    response = adjust(as_role("finance"), wallet, **data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert state(wallet) == before
