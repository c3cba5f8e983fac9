"""reconcile and money coming in (I12; ARCHITECTURE.md, "Money coming in"): every succeeded
top-up credited exactly once, each reversal and each debt payment booked as recorded, the
wallet's debt equal to its record. Drift planted by raw SQL is reported under I12 with the
right wallet, and only there. Also listed, without failing: top-ups pending past
IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS and wallets in debt; an unresolved parked payment
fails the check (an operator must place the money)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from iaas.billing import reversals, services
from iaas.billing.models import LedgerEntry, ParkedPayment, PaymentReversal, TopUp
from iaas.contracts import bus
from iaas.operations.reconciliation import reconcile
from tests.factories import funded_wallet
from tests.operations.test_reconcile import report, run, sql, violations


def failing(data: dict) -> dict[str, list[dict]]:
    return {name: check["violations"] for name, check in data["invariants"].items() if not check["ok"]}


def failed_report() -> dict:
    code, data = report()
    assert (code, data["ok"]) == (1, False)
    return data


def i12_details(data: dict) -> list[str]:
    return [violation["detail"] for violation in violations(data, "I12")]


def refund(top_up: TopUp, amount: int, reference: str | None = None) -> PaymentReversal:
    applied = reversals.reversal_apply(
        top_up_id=top_up.id, kind="refund", reference=reference or f"re_{uuid.uuid4().hex}", amount=amount
    )
    assert applied.created
    return applied.reversal


def plant_entry(wallet_id, *, kind: str, amount: int, reference: str, source_id) -> None:
    """A ledger entry appended by raw SQL, the wallet's balance and counter following it, so
    that only I12 can see it is wrong (INSERT is what the append-only triggers allow)."""
    sql(
        "INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after, "
        "transaction_date, posted_at, description, reference, context, source_id, created_by_id) "
        "SELECT %s, w.id, w.ledger_sequence + 1, %s, %s, w.balance + %s, now(), now(), 'planted', %s, '', "
        "%s, NULL FROM billing_wallet w WHERE w.id = %s",
        uuid.uuid4(),
        kind,
        amount,
        amount,
        reference,
        source_id,
        wallet_id,
    )
    sql(
        "UPDATE billing_wallet SET balance = balance + %s, ledger_sequence = ledger_sequence + 1 "
        "WHERE id = %s",
        amount,
        wallet_id,
    )


@pytest.fixture
def money_in(three_wallets, buy_server):
    """Three wallets of 100.00 EUR, each with a server whose first hour (0.04 EUR) is
    settled. The first's card refunded 100.00: 99.96 taken, 0.04 left as debt, which a
    10.00 top-up then paid. The second's refunded 100.00 too: its debt (0.04) stands. The
    third is untouched."""
    first, second, _third = three_wallets
    for wallet in three_wallets:
        buy_server(wallet)
    bus.deliver_pending()
    first_top_up, second_top_up = (TopUp.objects.get(wallet=wallet) for wallet in (first, second))
    refund(first_top_up, 10_000)
    paying = services.top_up_create(wallet_id=first.id, owner_id=first.owner_id, amount=1_000)
    refund(second_top_up, 10_000)
    for wallet in three_wallets:
        wallet.refresh_from_db()
    assert (first.balance, first.debt, paying.debt_paid) == (1_000 - 4, 0, 4)
    assert (second.balance, second.debt) == (0, 4)
    return {"wallets": three_wallets, "paying": paying, "refunded": second_top_up}


def test_top_ups_reversals_and_debt_paid_reconcile(money_in):
    code, data = report()
    assert (code, failing(data)) == (0, {})
    assert data["invariants"]["I12"]["ok"]
    code, out = run()
    assert "  I12  ok" in out
    assert "all 11 invariants hold" in out


def test_a_succeeded_top_up_without_its_credit_is_an_i12_violation(money_in):
    wallet = money_in["wallets"][2]
    pending = TopUp.objects.create(
        wallet=wallet, amount=700, currency="EUR", provider="manual", reference="x"
    )
    # Succeeded, linked to an entry that is no credit of it (an adjustment's): no top_up entry.
    adjustment = services.wallet_adjust(
        wallet_id=wallet.id, amount=1, reason="r", operator_id=wallet.owner_id
    )
    sql(
        "UPDATE billing_topup SET status = 'succeeded', ledger_entry_id = %s WHERE id = %s",
        adjustment.ledger_entry_id,
        pending.id,
    )
    code, data = report()
    assert code == 1
    assert list(failing(data)) == ["I12"]
    (violation,) = violations(data, "I12")
    assert violation["wallet_id"] == str(wallet.id)
    assert violation["detail"] == f"succeeded top-up {pending.id} credited 0 times"
    assert (violation["expected"], violation["found"]) == (
        {"credits": 1, "credited": 700},
        {"credits": 0, "credited": 0},
    )


def test_a_top_up_credited_twice_is_an_i12_violation(money_in):
    wallet = money_in["wallets"][2]
    top_up = TopUp.objects.get(wallet=wallet)
    plant_entry(wallet.id, kind="top_up", amount=top_up.amount, reference="top-up:again", source_id=top_up.id)
    data = failed_report()
    assert list(failing(data)) == ["I12"]
    assert i12_details(data) == [f"succeeded top-up {top_up.id} credited 2 times"]
    assert violations(data, "I12")[0]["found"] == {"credits": 2, "credited": 2 * top_up.amount}


def test_a_top_up_whose_amount_differs_from_its_credit_is_an_i12_violation(money_in):
    wallet = money_in["wallets"][2]
    top_up = TopUp.objects.get(wallet=wallet)
    sql("UPDATE billing_topup SET amount = amount + 1 WHERE id = %s", top_up.id)
    data = failed_report()
    assert list(failing(data)) == ["I12"]
    (violation,) = violations(data, "I12")
    assert violation["detail"].startswith(f"succeeded top-up {top_up.id} is not linked to its credit")
    assert violation["expected"] == {"credits": 1, "credited": 10_001}
    assert violation["found"] == {"credits": 1, "credited": 10_000, "entry": "top_up 10000"}


def test_a_credit_of_no_top_up_and_of_a_pending_one_are_i12_violations(money_in):
    wallet = money_in["wallets"][2]
    nobody = uuid.uuid4()
    plant_entry(wallet.id, kind="top_up", amount=300, reference="top-up:nobody", source_id=nobody)
    pending = TopUp.objects.create(
        wallet=wallet, amount=200, currency="EUR", provider="manual", reference="p"
    )
    plant_entry(wallet.id, kind="top_up", amount=200, reference="top-up:pending", source_id=pending.id)
    data = failed_report()
    assert list(failing(data)) == ["I12"]
    assert sorted(i12_details(data)) == sorted(
        [
            f"pending top-up {pending.id} was credited",
            f"top_up entry #{wallet.ledger_sequence + 1} credits no top-up (source {nobody})",
        ]
    )
    assert {v["wallet_id"] for v in violations(data, "I12")} == {str(wallet.id)}


def test_a_debt_payment_without_its_entry_and_an_entry_without_its_payment_are_i12_violations(money_in):
    paying = money_in["paying"]
    first = money_in["wallets"][0]
    # The top-up forgets it paid the debt: its debt entry pays nothing on record, and the
    # wallet's debt (0) no longer equals the reversals' 4 less 0 paid.
    sql("UPDATE billing_topup SET debt_paid = 0 WHERE id = %s", paying.id)
    data = failed_report()
    assert list(failing(data)) == ["I12"]
    assert sorted(i12_details(data)) == sorted(
        [
            f"debt entry of top-up {paying.id} that paid no debt",
            "debt differs from reversals' debt (4) less debt paid by top-ups (0)",
        ]
    )
    assert {v["wallet_id"] for v in violations(data, "I12")} == {str(first.id)}

    # The other way: a top-up that says it paid debt, with no debt entry.
    third = money_in["wallets"][2]
    top_up = TopUp.objects.get(wallet=third)
    sql("UPDATE billing_topup SET debt_paid = 3 WHERE id = %s", top_up.id)
    data = failed_report()
    details = i12_details(data)
    assert f"debt payment of top-up {top_up.id} differs from its debt entry" in details
    (missing,) = [v for v in violations(data, "I12") if str(top_up.id) in v["detail"]]
    assert (missing["expected"], missing["found"]) == (
        {"debt_paid": 3, "debt entries": 1},
        {"debt entries": 0, "paid": 0},
    )


def test_a_debt_entry_of_another_amount_is_an_i12_violation(money_in):
    paying = money_in["paying"]
    sql("UPDATE billing_topup SET debt_paid = 5 WHERE id = %s", paying.id)
    sql("UPDATE billing_wallet SET debt = 0 WHERE id = %s", paying.wallet_id)
    data = failed_report()
    assert f"debt payment of top-up {paying.id} differs from its debt entry" in i12_details(data)


def test_a_reversal_whose_entry_differs_is_an_i12_violation(money_in):
    second = money_in["wallets"][1]
    reversal = PaymentReversal.objects.get(wallet=second)
    # One cent more taken on record than the entry took (and one less debt: the parts
    # still add up, and the wallet's debt still equals the record).
    sql(
        "UPDATE billing_paymentreversal SET taken = taken + 1, debt_added = debt_added - 1 WHERE id = %s",
        reversal.id,
    )
    sql("UPDATE billing_wallet SET debt = debt - 1 WHERE id = %s", second.id)
    data = failed_report()
    assert list(failing(data)) == ["I12"]
    (violation,) = violations(data, "I12")
    assert violation["wallet_id"] == str(second.id)
    assert (
        violation["detail"]
        == f"reversal {reversal.id} differs from its ledger entry (or its wallet, or source)"
    )
    assert (violation["expected"], violation["found"]) == (
        {"entry": f"reversal {-(reversal.taken + 1)}"},
        {"entry": f"reversal {-reversal.taken}"},
    )


def test_a_reversal_that_lost_its_entry_is_an_i12_violation(money_in):
    second = money_in["wallets"][1]
    reversal = PaymentReversal.objects.get(wallet=second)
    sql("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending before ALTER TABLE
    sql("ALTER TABLE billing_paymentreversal DROP CONSTRAINT payment_reversal_taken_is_booked")
    sql("UPDATE billing_paymentreversal SET ledger_entry_id = NULL WHERE id = %s", reversal.id)
    entry = LedgerEntry.objects.get(kind="reversal", wallet=second)
    data = failed_report()
    assert list(failing(data)) == ["I12"]
    assert sorted(i12_details(data)) == sorted(
        [
            f"reversal {reversal.id} differs from its ledger entry (or its wallet, or source)",
            f"reversal entry #{entry.sequence} ({entry.reference}) books no reversal",
        ]
    )
    booked = next(v for v in violations(data, "I12") if v["detail"].startswith("reversal "))
    assert booked["found"] == {"entry": None}


def test_a_reversal_of_a_top_up_that_did_not_succeed_is_an_i12_violation(money_in):
    second = money_in["wallets"][1]
    reversal = PaymentReversal.objects.get(wallet=second)
    other = TopUp.objects.create(
        wallet=second, amount=10_000, currency="EUR", provider="manual", reference="o"
    )
    sql("UPDATE billing_paymentreversal SET top_up_id = %s WHERE id = %s", other.id, reversal.id)
    data = failed_report()
    assert i12_details(data) == [f"reversal {reversal.id} reverses no succeeded top-up of its wallet"]


def test_reversals_beyond_their_top_up_are_an_i12_violation(money_in):
    second = money_in["wallets"][1]
    reversal = PaymentReversal.objects.get(wallet=second)
    # The provider took 1.00 more than the top-up brought in, left as debt (the wallet owes it).
    sql(
        "UPDATE billing_paymentreversal SET amount = amount + 100, debt_added = debt_added + 100 "
        "WHERE id = %s",
        reversal.id,
    )
    sql("UPDATE billing_wallet SET debt = debt + 100 WHERE id = %s", second.id)
    data = failed_report()
    assert list(failing(data)) == ["I12"]
    (violation,) = violations(data, "I12")
    assert violation["detail"] == f"reversals of top-up {reversal.top_up_id} exceed its amount"
    assert (violation["expected"], violation["found"]) == ({"reversed at most": 10_000}, {"reversed": 10_100})


def test_a_debt_that_differs_from_its_record_is_an_i12_violation(money_in):
    second = money_in["wallets"][1]
    sql("UPDATE billing_wallet SET debt = debt + 1 WHERE id = %s", second.id)
    code, data = report()
    assert code == 1
    assert list(failing(data)) == ["I12"]
    (violation,) = violations(data, "I12")
    assert (violation["wallet_id"], violation["expected"], violation["found"]) == (str(second.id), 4, 5)
    code, out = run()
    assert "  I12  FAILED" in out
    assert f"wallet {second.id}  expected 4  found 5" in out


# --- Listed for an operator --------------------------------------------------------------------


def test_old_pending_top_ups_and_debts_are_listed_not_failed(money_in, settings):
    settings.IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS = 3600
    _first, second, third = money_in["wallets"]
    now = timezone.now()
    old = TopUp.objects.create(
        wallet=third,
        amount=2_500,
        currency="EUR",
        provider="stripe",
        provider_reference="pi_walked_away",
        reference="old",
        failed_attempts=2,
        created_at=now - dt.timedelta(hours=2),
    )
    TopUp.objects.create(
        wallet=third, amount=900, currency="EUR", provider="stripe", reference="new", created_at=now
    )
    code, data = report()
    assert code == 0
    assert data["ok"] is True
    money = data["money_in"]
    assert money["pending_top_ups"]["count"] == 1
    assert money["pending_top_ups"]["older_than_seconds"] == 3600
    (listed,) = money["pending_top_ups"]["oldest"]
    assert (listed["top_up_id"], listed["wallet_id"], listed["amount"], listed["provider_reference"]) == (
        str(old.id),
        str(third.id),
        2_500,
        "pi_walked_away",
    )
    assert listed["failed_attempts"] == 2
    assert money["wallets_in_debt"] == {
        "count": 1,
        "largest": [{"wallet_id": str(second.id), "currency": "EUR", "debt": 4, "status": "active"}],
    }
    assert money["parked_payments"] == {"count": 0, "unresolved": []}

    code, out = run()
    assert code == 0
    assert (
        "money in: 0 parked payment(s) to resolve, 1 top-up(s) pending longer than 1h, 1 wallet(s) in debt"
        in out
    )
    assert f"pending top-up {old.id}  wallet {third.id}  25.00 EUR  stripe pi_walked_away" in out
    assert f"debt  wallet {second.id}  0.04 EUR  (active)" in out


def test_an_unresolved_parked_payment_fails_reconcile_until_resolved(money_in, superuser_for_parking):
    parked = ParkedPayment.objects.create(
        provider="stripe",
        payment_reference="pi_nobody",
        amount=1_234,
        currency="EUR",
        why="its metadata names no top-up we know",
        event_id="evt_1",
    )
    code, data = report()
    assert code == 1
    assert data["ok"] is False
    assert failing(data) == {}  # not an invariant's violation: money waiting for an operator
    (listed,) = data["money_in"]["parked_payments"]["unresolved"]
    assert (listed["parked_payment_id"], listed["payment_reference"], listed["amount"]) == (
        str(parked.id),
        "pi_nobody",
        1_234,
    )
    code, out = run()
    assert code == 1
    assert "PARKED stripe pi_nobody  12.34 EUR" in out
    assert "its metadata names no top-up we know" in out
    assert "1 parked payment(s) to resolve" in out.splitlines()[-1]

    ParkedPayment.objects.filter(pk=parked.pk).update(
        resolved_at=timezone.now(), resolved_by=superuser_for_parking, resolution="Refunded at Stripe"
    )
    code, data = report()
    assert (code, data["ok"], data["money_in"]["parked_payments"]["count"]) == (0, True, 0)


@pytest.fixture
def superuser_for_parking(db):
    from tests.factories import UserFactory

    return UserFactory(is_staff=True, is_superuser=True)


def test_the_lists_are_bounded_and_say_how_many_more(db, settings, monkeypatch):
    from iaas.billing import checks

    monkeypatch.setattr(checks, "REPORTED_AT_MOST", 2)
    settings.IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS = 60
    wallet = funded_wallet(amount=100)
    long_ago = timezone.now() - dt.timedelta(days=3)
    made = [
        TopUp.objects.create(
            wallet=wallet,
            amount=100 + n,
            currency="EUR",
            provider="manual",
            reference=f"r{n}",
            created_at=long_ago + dt.timedelta(minutes=n),
        )
        for n in range(3)
    ]
    money_in = reconcile().money_in
    assert money_in.pending_top_ups == 3
    assert [t.top_up_id for t in money_in.oldest_pending_top_ups] == [made[0].id, made[1].id]
    _code, out = run()
    assert "... and 1 more pending top-ups (the --json report lists the same 2)" in out
