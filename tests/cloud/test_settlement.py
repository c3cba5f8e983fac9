"""settle_usage closes accrued usage into charges at the cadence (a day by default), at
a month's end and when a service ends; Billing books one ledger entry per wallet and
context; a closed span is never closed twice."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from iaas.cloud import services
from iaas.cloud.models import Charge, Usage
from iaas.contracts import bus
from tests.batch_runs import at, charges_for, run_at


@pytest.fixture(autouse=True)
def daily(settings):
    settings.IAAS_SETTLE_USAGE_EVERY_HOURS = 24


def buy(wallet, moment, name="web1"):
    with time_machine.travel(moment, tick=False):
        server = services.server_create(
            owner_id=wallet.owner_id, wallet_id=wallet.id, name=name, plan_id="s-2vcpu-4gb"
        )
        bus.deliver_pending()
    return server


def test_usage_is_closed_a_day_after_it_first_accrued_not_before(wallet, assert_invariants):
    server = buy(wallet, at(2026, 5, 10, 10))
    run_at(at(2026, 5, 10, 11, 30), "bill_usage")  # 11:00 accrues: due for closing at 11:30 tomorrow
    for hour in range(12, 24):
        run_at(at(2026, 5, 10, hour, 30), "bill_usage")
    assert len(charges_for(Charge, server)) == 1  # the first hour only: nothing closed yet
    usage = Usage.objects.get(service_id=server.id)
    assert (usage.hours, usage.amount, usage.closed_amount) == (14, 56, 4)
    assert usage.close_due_at == at(2026, 5, 11, 11, 30)
    assert_invariants()  # accrued, not closed: I4 counts it
    run_at(at(2026, 5, 11, 11, 30), "bill_usage")
    assert charges_for(Charge, server)[1:] == [(at(2026, 5, 10, 11), at(2026, 5, 11, 12), 25 * 4)]
    usage.refresh_from_db()
    assert (usage.closed_amount, usage.close_due_at) == (usage.amount, None)
    assert_invariants()


def test_a_month_is_closed_at_its_end(wallet, assert_invariants):
    server = buy(wallet, at(2026, 5, 31, 20))
    run_at(at(2026, 5, 31, 22, 30), "bill_usage")  # 21:00, 22:00 in May: due at May's end
    assert len(charges_for(Charge, server)) == 1
    run_at(at(2026, 6, 1, 0, 30), "bill_usage")  # 23:00 in May, 00:00 in June
    assert charges_for(Charge, server)[1:] == [(at(2026, 5, 31, 21), at(2026, 6, 1), 12)]
    assert Usage.objects.get(service_id=server.id, month=dt.date(2026, 6, 1)).closed_amount == 0
    assert_invariants()


def test_a_terminated_servers_usage_is_closed_by_the_next_run(wallet, assert_invariants):
    server = buy(wallet, at(2026, 5, 10, 10))
    run_at(at(2026, 5, 10, 12, 30), "bill_usage")
    with time_machine.travel(at(2026, 5, 10, 12, 45), tick=False):
        services.server_terminate(server_id=server.id)
    run_at(at(2026, 5, 10, 13), "settle_usage")
    assert charges_for(Charge, server)[1:] == [(at(2026, 5, 10, 11), at(2026, 5, 10, 13), 8)]
    assert_invariants()


def test_settling_again_closes_nothing_twice(wallet):
    server = buy(wallet, at(2026, 5, 10, 10))
    run_at(at(2026, 5, 11, 11, 30), "bill_usage")
    run_at(at(2026, 5, 12, 12), "settle_usage")
    summary = run_at(at(2026, 5, 12, 12), "settle_usage")
    assert summary["contexts"]["cloud"]["records"] == 0
    assert len(charges_for(Charge, server)) == 2
