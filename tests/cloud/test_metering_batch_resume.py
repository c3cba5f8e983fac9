"""A suspended server that resumes in a metering batch owes two spans in one month: the
hours it ran unpaid before it stopped, and the hour starting now. Both belong in the
month's one usage record, written by the batch itself. (Found by the stress test: the
batch proposed that record twice in one upsert, PostgreSQL refused the statement, and
every such batch rolled back and fell back to one server at a time, logging an error.)"""

from __future__ import annotations

import logging

import time_machine

from iaas.billing import services as billing_services
from iaas.cloud import services
from iaas.cloud.models import Server, Usage
from iaas.contracts import bus
from tests.batch_runs import at, run_at
from tests.factories import funded_wallet


def test_a_server_resuming_with_hours_owed_is_metered_by_its_batch(customer, caplog, assert_invariants):
    caplog.set_level(logging.INFO, logger="iaas.spending.batch")
    wallet = funded_wallet(customer, amount=4)  # one hour of s-2vcpu-4gb: the one bought
    with time_machine.travel(at(2026, 5, 10, 10), tick=False):
        server = services.server_create(
            owner_id=customer.id, wallet_id=wallet.id, name="web1", plan_id="s-2vcpu-4gb"
        )
        bus.deliver_pending()
    assert run_at(at(2026, 5, 10, 11, 5), "bill_usage")["suspended"] == 1  # ran 11:00-11:05 unpaid
    billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)

    summary = run_at(at(2026, 5, 10, 15, 20), "bill_usage")

    assert (summary["resumed"], summary["hours_charged"], summary["failed"]) == (1, 2, [])
    failed_batches = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed_batches == []  # the batch metered it, not the one-by-one fallback
    server.refresh_from_db()
    assert (server.status, server.paid_until) == (Server.Status.ACTIVE, at(2026, 5, 10, 16, 20))
    usage = Usage.objects.get(service_id=server.id)
    assert (usage.hours, usage.amount) == (3, 12)  # 10:00 bought, 11:00 owed, 15:20 resumed
    assert_invariants()
