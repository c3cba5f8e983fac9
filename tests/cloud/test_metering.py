"""bill_usage: every started hour accrued once, per calendar month up to the plan's cap,
in the month's usage record; suspension when the wallet cannot pay, resumption when it
can, termination after the grace period; never a terminated server. settle_usage closes
what accrued into charges (here at every run: the cadence set to 0)."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from iaas.billing import services as billing_services
from iaas.cloud import services
from iaas.cloud.models import Charge, Server, ServerPlan, Usage
from iaas.contracts import bus
from iaas.contracts.events import ChargeSettled, ServerResumed, ServerSuspended, ServerTerminated
from iaas.spending import metering
from iaas.spending.metered import MeteredServices
from tests.batch_runs import at, charges_for, run_at
from tests.factories import UserFactory, funded_wallet
from tests.threads import run_at_once

H = dt.timedelta(hours=1)


def bill(moment: dt.datetime, *args: str) -> dict:
    """The hourly run, then the settlement run (the tests' cadence is 0: each run's hours
    become a charge)."""
    return run_at(moment, "bill_usage", *args)


def usage_of(server) -> list[tuple[dt.date, int, int]]:
    return list(
        Usage.objects.filter(service_id=server.id).order_by("month").values_list("month", "hours", "amount")
    )


def buy(wallet, moment: dt.datetime, plan: str = "s-2vcpu-4gb", name: str = "web1") -> Server:
    with time_machine.travel(moment, tick=False):
        server = services.server_create(
            owner_id=wallet.owner_id, wallet_id=wallet.id, name=name, plan_id=plan
        )
        bus.deliver_pending()
    return server


def charges(server) -> list[tuple[dt.datetime, dt.datetime, int]]:
    return charges_for(Charge, server)


def test_each_started_hour_is_charged_once(wallet, assert_invariants):
    server = buy(wallet, at(2026, 5, 10, 10))  # the first hour, 10:00-11:00, at once
    assert bill(at(2026, 5, 10, 10, 59))["amounts"] == {}
    assert bill(at(2026, 5, 10, 11))["amounts"] == {}  # 11:00's hour starts now, not before
    summary = bill(at(2026, 5, 10, 11, 0, 1))
    assert (summary["amounts"], summary["hours_charged"]) == ({"EUR": 4}, 1)
    bill(at(2026, 5, 10, 13, 30))
    bill(at(2026, 5, 10, 13, 30))  # again: nothing new
    server.refresh_from_db()
    assert server.paid_until == at(2026, 5, 10, 14)
    assert charges(server) == [
        (at(2026, 5, 10, 10), at(2026, 5, 10, 11), 4),
        (at(2026, 5, 10, 11), at(2026, 5, 10, 12), 4),
        (at(2026, 5, 10, 12), at(2026, 5, 10, 14), 8),
    ]
    wallet.refresh_from_db()
    assert wallet.balance == 10_000 - 16
    assert_invariants()


def test_hours_are_split_at_the_month_boundary_and_capped_per_month(wallet, assert_invariants):
    server = buy(wallet, at(2026, 5, 1), plan="s-1vcpu-1gb")  # 1 cent an hour, at most 5.00 a month
    bill(at(2026, 5, 31, 23, 30))  # 744 hours started in May: capped at 500
    bill(at(2026, 6, 1, 2, 30))  # 3 June hours
    server.refresh_from_db()
    assert server.paid_until == at(2026, 6, 1, 3)
    assert charges(server) == [
        (at(2026, 5, 1), at(2026, 5, 1, 1), 1),
        (at(2026, 5, 1, 1), at(2026, 6, 1), 499),
        (at(2026, 6, 1), at(2026, 6, 1, 3), 3),
    ]
    assert Charge.objects.get(period_start=at(2026, 6, 1)).transaction_date == at(2026, 6, 1)
    bill(at(2026, 7, 1, 0, 30))  # June: 3 + 717 more hours, capped at 500
    june = sum(a for start, _, a in charges(server) if start.month == 6)
    assert june == 500
    assert_invariants()


def test_one_run_across_the_boundary_charges_each_month_its_own_hours(wallet):
    server = buy(wallet, at(2026, 5, 31, 22))
    bill(at(2026, 6, 1, 1, 30))
    assert charges(server)[1:] == [
        (at(2026, 5, 31, 23), at(2026, 6, 1), 4),
        (at(2026, 6, 1), at(2026, 6, 1, 2), 8),
    ]


def test_suspended_when_the_wallet_cannot_pay_and_resumed_when_it_can(customer, published, assert_invariants):
    wallet = funded_wallet(customer, amount=4)  # one hour of s-2vcpu-4gb
    server = buy(wallet, at(2026, 5, 10, 10))
    summary = bill(at(2026, 5, 10, 11, 5))
    assert (summary["suspended"], summary["amounts"]) == (1, {})
    server.refresh_from_db()
    assert (server.status, server.suspended_at, server.paid_until) == (
        "suspended",
        at(2026, 5, 10, 11, 5),
        at(2026, 5, 10, 11),
    )
    stops = [e for e in published if not hasattr(e, "amount") and not isinstance(e, ChargeSettled)]
    assert [type(e) for e in stops] == [ServerSuspended]
    assert bill(at(2026, 5, 10, 12))["still_suspended"] == 1  # still no money

    billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)
    summary = bill(at(2026, 5, 10, 15, 20))
    assert (summary["resumed"], summary["hours_charged"], summary["amounts"]) == (1, 2, {"EUR": 8})
    server.refresh_from_db()
    assert (server.status, server.suspended_at) == ("active", None)
    assert server.paid_until == at(2026, 5, 10, 16, 20)
    # the hour it ran unpaid (11:00, suspended at 11:05) and the hour from 15:20; not the
    # suspended hours in between: one charge closes the span, two hours of it
    assert charges(server)[1:] == [(at(2026, 5, 10, 11), at(2026, 5, 10, 16, 20), 8)]
    assert usage_of(server) == [(dt.date(2026, 5, 1), 3, 12)]
    assert ServerResumed in [type(e) for e in published]
    assert_invariants()


def test_terminated_after_the_grace_period_and_never_charged_again(customer, published):
    wallet = funded_wallet(customer, amount=4)
    server = buy(wallet, at(2026, 5, 10, 10))
    bill(at(2026, 5, 10, 11, 5))  # suspended
    assert bill(at(2026, 5, 12, 11), "--grace", "72h")["still_suspended"] == 1
    assert bill(at(2026, 5, 13, 11, 5), "--grace", "72h")["ended"] == 1
    server.refresh_from_db()
    assert (server.status, server.terminated_at) == ("terminated", at(2026, 5, 13, 11, 5))
    assert ServerTerminated in [type(e) for e in published]
    billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)
    assert bill(at(2026, 6, 1))["services"] == 0
    assert len(charges(server)) == 1


def test_a_terminated_server_is_never_charged(wallet):
    server = buy(wallet, at(2026, 5, 10, 10))
    with time_machine.travel(at(2026, 5, 10, 10, 30), tick=False):
        services.server_terminate(server_id=server.id)
    assert bill(at(2026, 5, 20))["services"] == 0
    assert len(charges(server)) == 1


def test_dry_run_changes_nothing(wallet):
    server = buy(wallet, at(2026, 5, 10, 10))
    out = StringIO()
    with time_machine.travel(at(2026, 5, 10, 13, 30), tick=False):
        call_command("bill_usage", "--dry-run", stdout=out)
    assert "1 active server(s) have 3 started hour(s) due, 0.12 EUR" in out.getvalue()
    assert len(charges(server)) == 1


def run_bill_usage():
    call_command("bill_usage", "--json", "--batch-size", "2", stdout=StringIO(), stderr=StringIO())


def settle():
    call_command("settle_usage", stdout=StringIO())
    bus.deliver_pending()


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_charge_each_hour_once(catalog, assert_invariants):
    wallets = [funded_wallet(UserFactory(), amount=10_000) for _ in range(4)]
    servers = [buy(w, at(2026, 5, 10, 10), name=f"s{i}{n}") for i, w in enumerate(wallets) for n in range(3)]
    with time_machine.travel(at(2026, 5, 10, 15, 30), tick=False):
        runs = run_at_once(run_bill_usage, run_bill_usage)
        settle()
    assert [run.error for run in runs] == [None, None]
    for server in servers:
        server.refresh_from_db()
        # a server another run held was skipped, never charged twice
        assert server.paid_until in (at(2026, 5, 10, 11), at(2026, 5, 10, 16))
        assert sum(a for _, _, a in charges(server)) == 4 * (server.paid_until - at(2026, 5, 10, 10)) // H
    with time_machine.travel(at(2026, 5, 10, 15, 30), tick=False):
        call_command("bill_usage", stdout=StringIO())  # a later run meters any skipped
        settle()
    for server in servers:
        server.refresh_from_db()
        assert server.paid_until == at(2026, 5, 10, 16)
        assert sum(a for _, _, a in charges(server)) == 24
    assert_invariants()


def test_a_batch_that_reserved_ahead_gives_back_what_it_did_not_use(settings, wallet, assert_invariants):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 1_000, "hosting": 0}
    buy(wallet, at(2026, 5, 10, 10))
    summary = bill(at(2026, 5, 10, 12, 30))
    assert (summary["amounts"], summary["allowances_released"]) == ({"EUR": 8}, 1)  # 11:00, 12:00
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.reserved) == (10_000 - 12, 0)
    assert_invariants()


def test_one_server_failing_stops_no_other_and_the_run_reports_it(wallet, monkeypatch):
    broken = buy(wallet, at(2026, 5, 10, 10), name="broken")
    fine = buy(wallet, at(2026, 5, 10, 10), name="fine")
    bill_one = MeteredServices.bill_one
    plan_steps = metering._plan_steps

    def batch_fails_on_broken(meter, servers, **kwargs):
        if broken.id in {s.id for s in servers}:
            raise RuntimeError("disk on fire")  # the whole batch rolls back ...
        return plan_steps(meter, servers, **kwargs)

    def fail_for_broken(meter, *, service_id, **kwargs):
        if service_id == broken.id:
            raise RuntimeError("disk on fire")
        return bill_one(meter, service_id=service_id, **kwargs)

    monkeypatch.setattr(metering, "_plan_steps", batch_fails_on_broken)
    monkeypatch.setattr(MeteredServices, "bill_one", fail_for_broken)  # ... then one at a time
    out, err = StringIO(), StringIO()
    with time_machine.travel(at(2026, 5, 10, 12, 30), tick=False):
        with pytest.raises(SystemExit) as exit_:
            call_command("bill_usage", stdout=out, stderr=err)
        settle()
    assert exit_.value.code == 1
    assert "failed 1" in out.getvalue()
    assert f"FAILED server {broken.id}: RuntimeError('disk on fire')" in err.getvalue()
    assert (len(charges(fine)), len(charges(broken))) == (2, 1)  # the other server was metered
    out = StringIO()
    with time_machine.travel(at(2026, 5, 10, 12, 30), tick=False), pytest.raises(SystemExit):
        call_command("bill_usage", "--json", stdout=out, stderr=StringIO())
    assert json.loads(out.getvalue())["failed"] == [
        {"server_id": str(broken.id), "error": "RuntimeError('disk on fire')"}
    ]


def test_two_partitions_meter_every_server_once(catalog, assert_invariants):
    """Two workers, each its half of the wallets (as `--workers 2` runs them), meter every
    server exactly once between them."""
    wallets = [funded_wallet(UserFactory(), amount=10_000) for _ in range(8)]
    servers = [buy(w, at(2026, 5, 10, 10), name=f"s{i}") for i, w in enumerate(wallets)]
    halves = [run_at(at(2026, 5, 10, 12, 30), "bill_usage", "--partition", f"{p}/2") for p in range(2)]
    assert sum(half["services"] for half in halves) == 8
    for server in servers:
        server.refresh_from_db()
        assert server.paid_until == at(2026, 5, 10, 13)
        assert sum(a for _, _, a in charges(server)) == 12
    assert_invariants()


@pytest.mark.django_db(transaction=True)
def test_workers_forked_by_the_command_meter_every_server_once_and_add_up(catalog, assert_invariants):
    """``--workers 2``: two processes forked from the command's, one partition each; the
    command prints their summaries added up."""
    wallets = [funded_wallet(UserFactory(), amount=10_000) for _ in range(8)]
    servers = [buy(w, at(2026, 5, 10, 10), name=f"s{i}") for i, w in enumerate(wallets)]
    out = StringIO()
    moment = at(2026, 5, 10, 12, 30)
    call_command("bill_usage", "--workers", "2", "--json", "--at", moment.isoformat(), stdout=out)
    summary = json.loads(out.getvalue())
    # 11:00 and 12:00 of each (the first hour was paid at purchase), 4 cents an hour
    assert (summary["services"], summary["charged"], summary["hours_charged"]) == (8, 8, 16)
    assert summary["amounts"] == {"EUR": 8 * 2 * 4}
    cloud = summary["contexts"]["cloud"]  # each context's share, added up over the workers too
    assert (summary["workers"], cloud["workers"], cloud["services"], cloud["noun"]) == (2, 2, 8, "server")
    assert summary["contexts"]["storage"]["services"] == 0
    for server in servers:
        server.refresh_from_db()
        assert server.paid_until == at(2026, 5, 10, 13)
    settle()
    assert_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_crashes_stops_the_run(catalog, monkeypatch):
    def crash(meter, **kwargs):
        raise RuntimeError("the worker's database went away")

    monkeypatch.setattr(metering, "meter_partition", crash)
    with pytest.raises(CommandError, match="a bill_usage worker failed"):
        call_command("bill_usage", "--workers", "2", "--json", stdout=StringIO(), stderr=StringIO())


def test_a_cap_changed_mid_month_applies_from_the_next_month(wallet, assert_invariants):
    """As a new price applies from the next hour, a new cap applies from the next month:
    the month's usage record keeps the cap it began with."""
    server = buy(wallet, at(2026, 5, 1), plan="s-1vcpu-1gb")  # 1 cent an hour, at most 5.00 a month
    bill(at(2026, 5, 5, 0, 30))
    ServerPlan.objects.filter(pk="s-1vcpu-1gb").update(monthly_cap=300)
    bill(at(2026, 6, 30, 23, 30))
    assert usage_of(server) == [(dt.date(2026, 5, 1), 744, 500), (dt.date(2026, 6, 1), 720, 300)]
    assert_invariants()
