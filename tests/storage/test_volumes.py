"""Storage's volumes through its services and the metering run: the first hour spent at
once, GB-hours accrued exactly and rounded once per month under a full month's cap,
growing (never shrinking), deleting, and the life every metered service shares
(suspended unpaid, resumed, deleted past its grace)."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection

from iaas.billing import services as billing_services
from iaas.billing.models import Wallet
from iaas.contracts import bus
from iaas.contracts.errors import (
    CurrencyMismatch,
    InsufficientFunds,
    InvalidState,
    NotFound,
    WalletNotActive,
    WalletNotFound,
)
from iaas.contracts.models import OutboxMessage
from iaas.operations.reconciliation import reconcile
from iaas.spending.usage import rounded
from iaas.storage import services
from iaas.storage.models import Allowance, Charge, Usage, Volume, VolumePlan
from iaas.storage.spending import volumes
from tests.batch_runs import at, charges_for, run_at
from tests.factories import UserFactory, funded_wallet

pytestmark = pytest.mark.django_db

H = dt.timedelta(hours=1)


def buy(wallet, moment, *, size_gb=100, plan="ssd", name="data-1") -> Volume:
    with time_machine.travel(moment, tick=False):
        volume = services.volume_create(
            owner_id=wallet.owner_id, wallet_id=wallet.id, name=name, plan_id=plan, size_gb=size_gb
        )
        bus.deliver_pending()
    return volume


def resize(volume, moment, size_gb) -> Volume:
    with time_machine.travel(moment, tick=False):
        volume = services.volume_resize(volume_id=volume.id, owner_id=volume.owner_id, size_gb=size_gb)
        bus.deliver_pending()
    return volume


def usage_of(volume) -> list[tuple]:
    return list(
        Usage.objects.filter(service_id=volume.id)
        .order_by("month")
        .values_list("month", "hours", "list_exact", "list_amount", "amount", "cap")
    )


def events(name: str) -> int:
    return OutboxMessage.objects.filter(event_type=name).count()


def test_buying_spends_the_first_hour_at_once_into_the_usage_record(wallet, assert_invariants):
    volume = buy(wallet, at(2026, 5, 10, 10), size_gb=1000)  # 1000 GB x 10 cents a GB-month

    assert (volume.status, volume.size_gb, volume.paid_until) == ("active", 1000, at(2026, 5, 10, 11))
    # An hour is 1000 x 10 / 730 = 13.7 cents: 14, rounded once for the month so far.
    assert usage_of(volume) == [(dt.date(2026, 5, 1), 1, 10_000, 14, 14, 10_000)]
    assert Allowance.objects.get(pk=wallet.id).charged_total == 14
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (10_000, 14)  # spent, not settled yet
    assert Charge.objects.count() == 0
    assert_invariants()


def test_a_wallet_that_cannot_pay_the_first_hour_buys_nothing(customer, catalog, assert_invariants):
    wallet = funded_wallet(customer, amount=13)
    with pytest.raises(InsufficientFunds), time_machine.travel(at(2026, 5, 10, 10), tick=False):
        services.volume_create(
            owner_id=customer.id, wallet_id=wallet.id, name="data-1", plan_id="ssd", size_gb=1000
        )
    assert (Volume.objects.count(), Usage.objects.count()) == (0, 0)
    wallet.refresh_from_db()
    assert wallet.reserved == 0
    assert_invariants()


@pytest.mark.parametrize(
    ("plan", "size_gb", "refused"),
    [("ssd", 9, InvalidState), ("nvme", 16_001, InvalidState), ("tape", 100, NotFound)],
)
def test_a_size_outside_the_plan_or_an_unknown_plan_is_refused(wallet, plan, size_gb, refused):
    with pytest.raises(refused):
        services.volume_create(
            owner_id=wallet.owner_id, wallet_id=wallet.id, name="data-1", plan_id=plan, size_gb=size_gb
        )
    assert Volume.objects.count() == 0


def test_gb_hours_accrue_exactly_and_the_month_is_rounded_once(wallet, assert_invariants):
    """10 GB of HDD at 4 cents a GB-month: an hour is 40/730 of a cent. Metered at uneven
    steps, a 30-day month spends exactly round(720 x 40 / 730) = 39, not a sum of
    rounded steps (which would be 0 for every hourly step)."""
    volume = buy(wallet, at(2026, 6, 1), size_gb=10, plan="hdd")
    moments = [at(2026, 6, 1, 1, 30), at(2026, 6, 1, 2, 30), at(2026, 6, 3, 7), at(2026, 6, 17, 23)]
    moments += [at(2026, 6, 30, 23, 30)]
    for moment in moments:
        run_at(moment, "bill_usage")
    assert usage_of(volume) == [(dt.date(2026, 6, 1), 720, 28_800, 39, 39, 40)]
    assert Allowance.objects.get(pk=wallet.id).charged_total == 39
    assert sum(amount for _, _, amount in charges_for(Charge, volume)) == 39
    assert_invariants()


def test_a_month_costs_at_most_a_full_gb_month_per_gb(wallet, assert_invariants):
    """May has 744 hours, 14 more than the 730 a GB-month is priced over: the cap holds."""
    volume = buy(wallet, at(2026, 5, 1), size_gb=100, plan="ssd")
    run_at(at(2026, 5, 31, 23, 30), "bill_usage")
    assert usage_of(volume) == [(dt.date(2026, 5, 1), 744, 744_000, 1019, 1000, 1000)]
    run_at(at(2026, 6, 1, 0, 30), "bill_usage")  # June starts at the same cap, from nothing
    assert usage_of(volume)[1] == (dt.date(2026, 6, 1), 1, 1000, 1, 1, 1000)
    assert_invariants()


def test_growing_pays_the_rest_of_the_hour_at_the_new_size_and_the_hours_after(wallet, assert_invariants):
    volume = buy(wallet, at(2026, 5, 10, 10), size_gb=100)  # 1000/730 an hour: 1.37
    resize(volume, at(2026, 5, 10, 10, 20), 300)  # +200 GB for the hour paid: 2000/730 more
    assert usage_of(volume) == [(dt.date(2026, 5, 1), 1, 3000, 4, 4, 3000)]
    run_at(at(2026, 5, 10, 12, 30), "bill_usage")  # 11:00, 12:00 at 300 GB
    assert usage_of(volume) == [(dt.date(2026, 5, 1), 3, 9000, 12, 12, 3000)]
    assert [e.payload["size_gb"] for e in OutboxMessage.objects.filter(event_type="VolumeResized")] == [300]
    assert_invariants()


def test_growing_a_capped_month_raises_its_cap_and_its_amount_to_the_new_floor(wallet, assert_invariants):
    """The cap was holding May down (1019 listed, 1000 spent); at twice the size, the cap
    is 2000 and the month costs what it listed, the old cap no longer holding it."""
    volume = buy(wallet, at(2026, 5, 1), size_gb=100)
    run_at(at(2026, 5, 31, 22, 30), "bill_usage")  # 743 hours: 1017.8 listed, 1000 spent
    resize(volume, at(2026, 5, 31, 22, 40), 200)  # +100 GB for 22:00-23:00
    (_, hours, exact, listed, amount, cap) = usage_of(volume)[0]
    assert (hours, exact, cap) == (743, 744_000, 2000)
    assert listed == amount == rounded(744_000, 730) == 1019
    assert_invariants()


def test_a_volume_only_grows_within_its_plan(wallet):
    volume = buy(wallet, at(2026, 5, 10, 10), size_gb=100)
    with pytest.raises(InvalidState, match="only grow"):
        resize(volume, at(2026, 5, 10, 10, 5), 50)
    with pytest.raises(InvalidState, match="10 to 16000 GB"):
        resize(volume, at(2026, 5, 10, 10, 5), 16_001)
    same = resize(volume, at(2026, 5, 10, 10, 5), 100)
    assert same.size_gb == 100
    assert events("VolumeResized") == 0
    services.volume_delete(volume_id=volume.id)
    with pytest.raises(InvalidState, match="deleted"):
        resize(volume, at(2026, 5, 10, 10, 5), 200)


def test_another_customers_volume_cannot_be_grown_or_deleted(wallet):
    volume = buy(wallet, at(2026, 5, 10, 10))
    mallory = UserFactory()
    with pytest.raises(NotFound):
        services.volume_resize(volume_id=volume.id, owner_id=mallory.id, size_gb=200)
    with pytest.raises(NotFound):
        services.volume_delete(volume_id=volume.id, owner_id=mallory.id)
    volume.refresh_from_db()
    assert (volume.size_gb, volume.status) == (100, "active")


def test_growing_without_the_money_for_the_rest_of_the_hour_changes_nothing(customer, catalog):
    wallet = funded_wallet(customer, amount=2)
    volume = buy(wallet, at(2026, 5, 10, 10), size_gb=100)  # 1.37: 1 cent spent
    with pytest.raises(InsufficientFunds):
        resize(volume, at(2026, 5, 10, 10, 1), 1000)  # +900 GB for the hour: 12 cents more
    volume.refresh_from_db()
    assert volume.size_gb == 100
    assert usage_of(volume) == [(dt.date(2026, 5, 1), 1, 1000, 1, 1, 1000)]


def test_deleting_stops_accrual_and_settles_what_accrued(wallet, assert_invariants):
    volume = buy(wallet, at(2026, 5, 10, 10), size_gb=1000)
    run_at(at(2026, 5, 10, 12, 30), "bill_usage")
    with time_machine.travel(at(2026, 5, 10, 12, 45), tick=False):
        deleted = services.volume_delete(volume_id=volume.id, owner_id=wallet.owner_id)
        again = services.volume_delete(volume_id=volume.id, owner_id=wallet.owner_id)
    assert (deleted.status, deleted.deleted_at, again.deleted_at) == (
        "deleted",
        *[at(2026, 5, 10, 12, 45)] * 2,
    )
    assert events("VolumeDeleted") == 1
    run_at(at(2026, 5, 10, 20, 30), "bill_usage")  # nothing more accrues
    assert usage_of(volume) == [(dt.date(2026, 5, 1), 3, 30_000, 41, 41, 10_000)]
    assert sum(amount for _, _, amount in charges_for(Charge, volume)) == 41
    wallet = Wallet.objects.get(pk=wallet.id)
    assert (wallet.balance, wallet.reserved) == (10_000 - 41, 0)
    assert_invariants()


def test_an_unpaid_volume_is_suspended_resumed_when_paid_and_deleted_past_its_grace(
    customer, catalog, settings, assert_invariants
):
    settings.IAAS_GRACE_HOURS = {"storage": 48}
    wallet = funded_wallet(customer, amount=14)
    paid = buy(wallet, at(2026, 5, 10, 10), size_gb=1000, name="paid")  # 14 a first hour
    assert run_at(at(2026, 5, 10, 11, 5), "bill_usage")["suspended"] == 1
    paid.refresh_from_db()
    assert (paid.status, paid.suspension_causes) == ("suspended", ["unpaid"])
    assert events("VolumeSuspended") == 1
    billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=100)
    assert run_at(at(2026, 5, 10, 14), "bill_usage")["resumed"] == 1  # pays 11:00 and 14:00
    paid.refresh_from_db()
    assert (paid.status, paid.paid_until) == ("active", at(2026, 5, 10, 15))

    unpaid = funded_wallet(UserFactory(), amount=14)
    lost = buy(unpaid, at(2026, 5, 10, 10), size_gb=1000, name="lost")
    run_at(at(2026, 5, 10, 11, 5), "bill_usage")
    summary = run_at(at(2026, 5, 12, 11, 5), "bill_usage")  # 48 hours unpaid
    assert summary["contexts"]["storage"]["ended"] == 1
    lost.refresh_from_db()
    assert (lost.status, lost.deleted_at) == ("deleted", at(2026, 5, 12, 11, 5))
    assert OutboxMessage.objects.filter(event_type="VolumeDeleted", payload__reason="unpaid").count() == 1
    assert_invariants()


def test_an_operator_holds_and_resumes_a_volume(wallet, admin_user, assert_invariants):
    volume = buy(wallet, at(2026, 5, 10, 10))
    with time_machine.travel(at(2026, 5, 10, 10, 30), tick=False):
        volumes.suspend(service_id=volume.id, reason="abuse report", actor_id=admin_user.pk)
    volume.refresh_from_db()
    assert (volume.suspension_causes, volumes.terminates_at(volume)) == (["operator"], None)
    assert run_at(at(2026, 5, 20), "bill_usage")["services"] == 0  # no batch lifts a hold
    with time_machine.travel(at(2026, 5, 20, 9), tick=False):
        volumes.lift_operator_hold(service_id=volume.id, actor_id=admin_user.pk)
    volume.refresh_from_db()
    # Charged the hour from now; the suspended time is never charged.
    assert (volume.status, volume.paid_until) == ("active", at(2026, 5, 20, 10))
    assert usage_of(volume)[0][1] == 2
    bus.deliver_pending()  # the hold and its lift, to the customer's notifications
    assert_invariants()


def test_reconcile_finds_a_list_amount_not_rounded_from_the_exact_list(wallet):
    volume = buy(wallet, at(2026, 5, 10, 10), size_gb=1000)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE storage_usage SET list_amount = 15 WHERE service_id = %s", [volume.id])
    violations = reconcile().violations["I11"]
    assert any("not the exact list 10000/730 rounded once" in v.detail for v in violations), violations


def test_the_catalog_prices_gb_months_in_minor_units(catalog):
    assert list(VolumePlan.objects.values_list("id", "price_per_gb_month", "min_size_gb", "max_size_gb")) == [
        ("hdd", 4, 10, 16000),
        ("ssd", 10, 10, 16000),
        ("nvme", 20, 10, 16000),
    ]


@pytest.mark.parametrize(
    ("whose", "currency", "refused"),
    [("mallory", "EUR", WalletNotFound), ("customer", "USD", CurrencyMismatch)],
)
def test_a_first_hour_that_costs_nothing_yet_still_checks_the_wallet(
    customer, catalog, whose, currency, refused
):
    """10 GB of HDD: an hour is 40/730 of a cent, nothing spent until it adds up to one. A
    purchase still checks the wallet's owner and currency, as every spend does: no volume
    on another customer's wallet, none priced in EUR on a USD wallet."""
    owner = UserFactory() if whose == "mallory" else customer
    wallet = funded_wallet(owner, amount=0, currency=currency)
    with pytest.raises(refused):
        services.volume_create(
            owner_id=customer.id, wallet_id=wallet.id, name="data-1", plan_id="hdd", size_gb=10
        )
    assert (Volume.objects.count(), Usage.objects.count()) == (0, 0)


def test_a_first_hour_that_costs_nothing_yet_needs_a_cent_available(customer, catalog, assert_invariants):
    """An empty wallet buys nothing, however small the volume: the first hour rounds to
    nothing, so a cent is reserved into Storage's allowance (held, not spent) and the
    hours that follow spend it."""
    empty = funded_wallet(customer, amount=0)
    with pytest.raises(InsufficientFunds):
        services.volume_create(
            owner_id=customer.id, wallet_id=empty.id, name="data-1", plan_id="hdd", size_gb=10
        )
    assert Volume.objects.count() == 0
    billing_services.top_up_create(wallet_id=empty.id, owner_id=customer.id, amount=1)
    volume = services.volume_create(
        owner_id=customer.id, wallet_id=empty.id, name="data-1", plan_id="hdd", size_gb=10
    )
    assert usage_of(volume)[0][1:] == (1, 40, 0, 0, 40)
    allowance = Allowance.objects.get(pk=empty.id)
    assert (allowance.amount, allowance.charged_total) == (1, 0)
    assert_invariants()


def test_a_frozen_wallet_new_to_storage_gets_a_blocked_allowance(customer, catalog):
    wallet = funded_wallet(customer, amount=1_000)
    Wallet.objects.filter(pk=wallet.pk).update(status=Wallet.Status.FROZEN)
    with pytest.raises(WalletNotActive):
        services.volume_create(
            owner_id=customer.id, wallet_id=wallet.id, name="data-1", plan_id="hdd", size_gb=10
        )
    assert Volume.objects.count() == 0


def test_a_suspended_volume_does_not_grow(customer, catalog):
    """Its owed hours are charged when it resumes, at its size then: growing it first
    would price the hours it ran before at the bigger size."""
    wallet = funded_wallet(customer, amount=14)
    volume = buy(wallet, at(2026, 5, 10, 10), size_gb=1000)
    run_at(at(2026, 5, 10, 11, 5), "bill_usage")  # unpaid: suspended
    with pytest.raises(InvalidState, match="suspended"):
        resize(volume, at(2026, 5, 10, 12), 2000)
    volume.refresh_from_db()
    assert (volume.status, volume.size_gb) == ("suspended", 1000)


def test_growing_in_the_first_hour_of_a_month_leaves_the_last_month_alone(wallet, assert_invariants):
    """The paid hour started in May: May may already be closed and invoiced, so the rest
    of that hour is not charged again at the new size; June starts at the new size."""
    volume = buy(wallet, at(2026, 5, 31, 23, 30), size_gb=100)  # paid until 00:30 on 1 June
    may = usage_of(volume)
    resize(volume, at(2026, 6, 1, 0, 10), 1000)
    assert usage_of(volume) == may
    run_at(at(2026, 6, 1, 0, 40), "bill_usage")  # the hour from 00:30, at 1000 GB
    assert usage_of(volume)[1] == (dt.date(2026, 6, 1), 1, 10_000, 14, 14, 10_000)
    assert_invariants()
