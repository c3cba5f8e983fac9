"""Batch runs are set-based: a batch makes the same number of statements whatever its
size (ARCHITECTURE.md, "Batches"), and it does what the per-item path it replaces does,
item for item."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from iaas.cloud import services as cloud
from iaas.cloud.models import Allowance, Server, Usage
from iaas.cloud.spending import servers as cloud_servers
from iaas.contracts import bus
from iaas.hosting import batch as hosting_batch
from iaas.hosting import services as hosting
from iaas.hosting.models import Subscription
from iaas.spending import metering, settlement
from iaas.spending.batch import Partition
from tests.batch_runs import at
from tests.factories import UserFactory, funded_wallet

GRACE = dt.timedelta(hours=168)
BOUGHT = at(2026, 5, 10, 10)
RUN = at(2026, 5, 10, 13, 30)


def statements(work) -> list[str]:
    """What PostgreSQL sees of ``work``, savepoints of the test's own transaction aside."""
    with CaptureQueriesContext(connection) as captured:
        work()
    return [
        q["sql"]
        for q in captured.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))
    ]


def servers_on(wallets: int, per_wallet: int, *, balance: int = 100_000) -> list[Server]:
    servers = []
    for _ in range(wallets):
        wallet = funded_wallet(UserFactory(), amount=balance)
        for n in range(per_wallet):
            with time_machine.travel(BOUGHT, tick=False):
                servers.append(
                    cloud.server_create(
                        owner_id=wallet.owner_id, wallet_id=wallet.id, name=f"s{n}", plan_id="s-2vcpu-4gb"
                    )
                )
    bus.deliver_pending()
    return servers


def meter(size: int = 1000):
    return lambda: metering.meter_batch(
        cloud_servers, now=RUN, grace=GRACE, partition=Partition(), after=None, size=size
    )


@pytest.mark.parametrize(("wallets", "per_wallet"), [(2, 2), (9, 4)])
def test_a_metering_batch_makes_the_same_statements_whatever_its_size(catalog, wallets, per_wallet):
    servers_on(wallets, per_wallet)
    sql = statements(meter())
    # lock_timeout; servers (locked, with their plans and the usage record of the month
    # their next hour starts in); allowances (locked); Billing: wallets known, wallets
    # locked, reserved grows, holds grow, reservations recorded, FundsReserved recorded
    # (one outbox insert); usage upserted; allowances debited; servers updated
    assert len(sql) == 12, "\n".join(q[:120] for q in sql)
    assert (
        sum("FOR NO KEY UPDATE" in q and "SKIP LOCKED" in q for q in sql) == 3
    )  # servers, allowances, wallets
    assert Usage.objects.filter(hours=4).count() == wallets * per_wallet  # 10:00 and 11:00-13:00


@pytest.mark.parametrize(("wallets", "per_wallet"), [(2, 2), (9, 4)])
def test_a_batch_with_wallets_that_cannot_pay_makes_the_same_statements_whatever_its_size(
    catalog, wallets, per_wallet
):
    servers_on(wallets, per_wallet, balance=4 * per_wallet)  # the first hours only
    sql = statements(meter())
    # lock_timeout; servers (with their usage records); allowances; Billing: wallets
    # known, wallets locked, which refused wallets another context holds money on;
    # servers updated; their history (one insert); their ServerSuspended events (one
    # outbox insert, recorded even while nobody subscribes)
    assert len(sql) == 9, "\n".join(q[:120] for q in sql)
    assert Server.objects.filter(status="suspended").count() == wallets * per_wallet


def test_a_renewal_batch_makes_the_same_statements_whatever_its_size(catalog):
    counts = []
    for wallets in (2, 7):
        for _ in range(wallets):
            wallet = funded_wallet(UserFactory(), amount=10_000)
            for n in range(2):
                with time_machine.travel(BOUGHT, tick=False):
                    hosting.subscription_create(
                        owner_id=wallet.owner_id,
                        wallet_id=wallet.id,
                        domain=f"{wallet.id.hex[:8]}-{n}.example",
                        plan_id="web-starter",
                    )
        bus.deliver_pending()
        sql = statements(
            lambda: hosting_batch.renew_batch(
                now=at(2026, 6, 10, 12), grace=GRACE, partition=Partition(), after=None, size=1000
            )
        )
        counts.append(len(sql))
        renewed = Subscription.objects.filter(status="active", current_period_end=at(2026, 7, 10, 10))
        assert renewed.count() == 2 * wallets
        Subscription.objects.update(status="cancelled")  # out of the next round's way
    # lock_timeout; subscriptions; allowances; Billing's five and its FundsReserved (one
    # outbox insert); allowances debited; charges inserted; subscriptions updated;
    # ChargesRecorded (one insert)
    assert counts == [13, 13]


def test_a_settlement_batch_makes_the_same_statements_whatever_its_size(catalog):
    counts = []
    for wallets in (2, 6):
        servers_on(wallets, 3)
        metering.meter_batch(
            cloud_servers, now=RUN, grace=GRACE, partition=Partition(), after=None, size=1000
        )
        sql = statements(
            lambda: settlement.close_batch(
                cloud.spender,
                describe=cloud.spender.describe_usage,
                now=RUN,
                partition=Partition(),
                after=None,
                size=1000,
            )
        )
        counts.append(len(sql))
    # lock_timeout; usage records (locked); the servers' names; charges inserted;
    # records closed; ChargesRecorded (one insert)
    assert counts == [6, 6]


def test_the_batch_does_what_the_per_server_path_does(catalog):
    """The same servers, metered one by one and in a batch, end the same: usage records,
    paid_until, status and causes, and what each allowance spent."""
    by_path = {}
    for path in ("per_server", "batch"):
        rich = servers_on(1, 3)
        poor = servers_on(1, 2, balance=8)  # two first hours: cannot pay 11:00
        ids = [s.id for s in rich + poor]
        with time_machine.travel(RUN, tick=False):
            if path == "per_server":
                for server_id in ids:
                    cloud.server_bill_usage(server_id=server_id, now=RUN, grace=GRACE)
            else:
                metering.meter_partition(cloud_servers, now=RUN, grace=GRACE, partition=Partition())
        by_path[path] = _outcome(rich, poor)
        Server.objects.filter(id__in=ids).update(status="terminated", terminated_at=RUN)
    assert by_path["batch"] == by_path["per_server"]


def _outcome(*groups) -> list:
    rows = []
    for servers in groups:
        for server in servers:
            server.refresh_from_db()
            usage = list(
                Usage.objects.filter(service_id=server.id).values_list(
                    "month", "hours", "list_amount", "amount"
                )
            )
            rows.append((server.paid_until, server.status, server.suspension_causes, usage))
        allowance = Allowance.objects.get(pk=servers[0].wallet_id)
        rows.append((allowance.amount, allowance.charged_total))
    return rows
