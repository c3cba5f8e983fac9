"""The invariants the database holds by itself: no bug in Python can break them."""

import datetime as dt
import itertools

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction

from iaas.billing.models import LedgerEntry
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db


def execute(sql, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_reserved_above_balance_is_rejected(wallet):
    with pytest.raises(IntegrityError, match="wallet_reserved_within_balance"):
        execute("UPDATE billing_wallet SET reserved = balance + 1 WHERE id = %s", [wallet.id])


def test_a_negative_balance_is_rejected(wallet):
    with pytest.raises(IntegrityError, match="wallet_balance_not_negative"):
        execute("UPDATE billing_wallet SET balance = -1 WHERE id = %s", [wallet.id])


def test_a_negative_allowance_is_rejected(catalog, customer, wallet):
    from iaas.cloud import services

    services.server_create(owner_id=customer.id, wallet_id=wallet.id, name="web", plan_id="s-1vcpu-1gb")
    with pytest.raises(IntegrityError, match="cloud_allowance_not_negative"):
        execute(
            "UPDATE cloud_allowance SET amount = -1, granted_total = granted_total - 1 WHERE wallet_id = %s",
            [wallet.id],
        )


def test_an_allowance_whose_totals_do_not_add_up_is_rejected(catalog, customer, wallet):
    from iaas.hosting import services

    services.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="a.example", plan_id="web-starter"
    )
    with pytest.raises(IntegrityError, match="hosting_allowance_totals_add_up"):
        execute("UPDATE hosting_allowance SET amount = amount + 100 WHERE wallet_id = %s", [wallet.id])


def test_a_negative_hold_is_rejected(wallet):
    execute(
        "INSERT INTO billing_hold (wallet_id, context, amount, granted_total, captured_total, "
        "released_total) "
        "VALUES (%s, 'cloud', 0, 0, 0, 0)",
        [wallet.id],
    )
    with pytest.raises(IntegrityError, match="hold_not_negative"):
        execute("UPDATE billing_hold SET amount = -1 WHERE wallet_id = %s", [wallet.id])


def test_updating_the_ledger_is_rejected(wallet):
    entry = LedgerEntry.objects.get(wallet=wallet)
    with pytest.raises(IntegrityError, match="append-only: UPDATE refused"):
        execute("UPDATE billing_ledgerentry SET amount = 1 WHERE id = %s", [entry.id])


def test_deleting_from_the_ledger_is_rejected(wallet):
    entry = LedgerEntry.objects.get(wallet=wallet)
    with pytest.raises(IntegrityError, match="append-only: DELETE refused"):
        execute("DELETE FROM billing_ledgerentry WHERE id = %s", [entry.id])
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(description="rewritten")


def test_a_charge_entry_must_be_a_debit(wallet):
    with pytest.raises(IntegrityError, match="ledger_amount_sign_matches_kind"):
        execute(
            "INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after, "
            "transaction_date, posted_at, description, reference, context) "
            "VALUES (gen_random_uuid(), %s, 99, 'charge', 5, 10005, now(), now(), 'x', 'x', 'cloud')",
            [wallet.id],
        )


def test_deleting_a_customer_with_money_is_refused(wallet, customer):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        customer.delete()


# --- No two charges of one service overlap in time (PostgreSQL exclusion constraints) ---


def charge_for(model, subject, start, end, amount=4, **fields):
    """A charge row written directly (as a settlement run writes them), in a savepoint."""
    with transaction.atomic():
        return model.objects.create(
            wallet_id=subject.wallet_id,
            owner_id=subject.owner_id,
            amount=amount,
            currency="EUR",
            description="planted",
            subject_id=subject.id,
            period_start=start,
            period_end=end,
            transaction_date=start,
            **fields,
        )


def overlapping_pairs(model) -> list:
    """Charges of one subject whose half-open periods intersect (none, by construction)."""
    charges = list(
        model.objects.order_by("subject_id", "period_start").values_list(
            "subject_id", "period_start", "period_end"
        )
    )
    return [
        (a, b)
        for a, b in itertools.pairwise(charges)
        if a[0] == b[0] and b[1] < a[2] and a[1] < a[2] and b[1] < b[2]
    ]


def test_an_hour_of_a_server_charged_twice_is_refused_and_adjacent_hours_pass(catalog, customer, wallet):
    from iaas.cloud import services
    from iaas.cloud.models import Charge

    server = services.server_create(
        owner_id=customer.id, wallet_id=wallet.id, name="web", plan_id="s-2vcpu-4gb"
    )
    first = Charge.objects.get(subject_id=server.id)
    hour = dt.timedelta(hours=1)
    with pytest.raises(IntegrityError, match="cloud_charge_no_overlap"):
        charge_for(Charge, server, first.period_start + hour / 2, first.period_end + hour / 2)
    with pytest.raises(IntegrityError, match="cloud_charge_no_overlap"):
        charge_for(Charge, server, first.period_start, first.period_end)  # the same hour again
    charge_for(Charge, server, first.period_end, first.period_end + hour)  # the next hour: adjacent
    charge_for(Charge, server, first.period_start - hour, first.period_start)  # the hour before
    other = services.server_create(
        owner_id=customer.id, wallet_id=wallet.id, name="db", plan_id="s-2vcpu-4gb"
    )
    charge_for(Charge, other, first.period_start - 2 * hour, first.period_start)  # another server's hours
    assert Charge.objects.filter(subject_id=server.id).count() == 3


def test_a_month_of_a_subscription_charged_twice_is_refused_and_the_next_month_passes(
    catalog, customer, wallet
):
    from iaas.hosting import services
    from iaas.hosting.models import Charge

    subscription = services.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="a.example", plan_id="web-starter"
    )
    first = Charge.objects.get(subject_id=subscription.id)
    with pytest.raises(IntegrityError, match="hosting_charge_no_overlap"):
        charge_for(
            Charge,
            subscription,
            first.period_end - dt.timedelta(days=1),
            first.period_end + dt.timedelta(days=30),
        )
    charge_for(Charge, subscription, first.period_end, first.period_end + dt.timedelta(days=30))
    assert Charge.objects.filter(subject_id=subscription.id).count() == 2


def test_hosting_purchases_renewals_and_resumptions_never_overlap(catalog, customer):
    """Every path that charges a subscription, under the constraint: the purchase, renewals
    month after month, a suspension for non-payment and the resumption after the paid
    period ended (a new month from then), an operator's hold lifted inside a paid period
    (no charge)."""
    from iaas.billing import services as billing_services
    from iaas.hosting import services
    from iaas.hosting.models import Charge
    from tests.batch_runs import at

    wallet = funded_wallet(customer, amount=3 * 399)
    with time_machine.travel(at(2026, 1, 31, 9), tick=False):
        subscription = services.subscription_create(
            owner_id=customer.id, wallet_id=wallet.id, domain="b.example", plan_id="web-starter"
        )
    for moment in (at(2026, 2, 28, 9), at(2026, 3, 31, 9), at(2026, 4, 30, 9)):  # the last one is refused
        services.subscription_renew(subscription_id=subscription.id, now=moment)
    subscription.refresh_from_db()
    assert subscription.status == "suspended"
    billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=399)
    services.subscription_renew(subscription_id=subscription.id, now=at(2026, 5, 2, 9))  # resumed, new month
    services.subscription_suspend(subscription_id=subscription.id, reason="abuse report")
    with time_machine.travel(at(2026, 5, 10, 9), tick=False):
        services.subscription_resume(subscription_id=subscription.id)  # inside the paid period
    periods = list(
        Charge.objects.filter(subject_id=subscription.id)
        .order_by("period_start")
        .values_list("period_start", "period_end")
    )
    assert periods == [
        (at(2026, 1, 31, 9), at(2026, 2, 28, 9)),
        (at(2026, 2, 28, 9), at(2026, 3, 31, 9)),
        (at(2026, 3, 31, 9), at(2026, 4, 30, 9)),
        (at(2026, 5, 2, 9), at(2026, 6, 2, 9)),
    ]
    assert overlapping_pairs(Charge) == []


def test_a_servers_first_hour_and_the_usage_closed_after_it_are_adjacent(catalog, customer, wallet):
    """A server's first hour is a one-off charge recorded closed in its month's usage
    record; a settlement run closes the span [closed_until, accrued_until) into a charge.
    Across a month's end and a suspension for non-payment, those spans follow the first
    hour and each other without overlapping (written here as settlement writes them)."""
    from iaas.cloud import services
    from iaas.cloud.models import Charge, Server, Usage
    from tests.batch_runs import at
    from tests.factories import usage_accrued

    with time_machine.travel(at(2026, 5, 31, 22, 30), tick=False):
        server = services.server_create(
            owner_id=customer.id, wallet_id=wallet.id, name="web", plan_id="s-2vcpu-4gb"
        )
    usage_accrued(server, hours=3, now=at(2026, 6, 1, 1, 30))  # 23:30 May, then 00:30 and 01:30 June

    def close_like_settlement():
        for record in Usage.objects.filter(service_id=server.id).order_by("month"):
            if record.amount > record.closed_amount:
                charge_for(
                    Charge,
                    server,
                    record.closed_until,
                    record.accrued_until,
                    amount=record.amount - record.closed_amount,
                )
            Usage.objects.filter(pk=record.pk).update(
                closed_amount=record.amount,
                closed_hours=record.hours,
                closed_until=record.accrued_until,
                close_due_at=None,
            )

    close_like_settlement()
    Server.objects.filter(pk=server.pk).update(
        status="suspended", suspended_at=at(2026, 6, 1, 2), unpaid_since=at(2026, 6, 1, 2)
    )
    with time_machine.travel(at(2026, 6, 3, 12), tick=False):
        services.server_resume(server_id=server.id)  # the hour it ran unpaid, then one from now
    close_like_settlement()
    periods = list(
        Charge.objects.filter(subject_id=server.id)
        .order_by("period_start")
        .values_list("period_start", "period_end")
    )
    assert periods == [
        (at(2026, 5, 31, 22, 30), at(2026, 5, 31, 23, 30)),  # the first hour
        (at(2026, 5, 31, 23, 30), at(2026, 6, 1, 0, 30)),  # May's last started hour
        (at(2026, 6, 1, 0, 30), at(2026, 6, 1, 2, 30)),  # June's first two
        (
            at(2026, 6, 1, 2, 30),
            at(2026, 6, 3, 13),
        ),  # the resumed hour 12:00-13:00 (suspended time uncharged)
    ]
    assert overlapping_pairs(Charge) == []
    with pytest.raises(IntegrityError, match="cloud_charge_no_overlap"):
        charge_for(Charge, server, at(2026, 6, 3, 12), at(2026, 6, 3, 13))  # the resumed hour again
