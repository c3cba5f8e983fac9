"""Queries per purchase, pinned: inside the allowance (the wallet row untouched) and
with a reservation from Billing. Measured as production runs it: the purchase is the
outermost transaction (no test transaction around it, so no savepoints)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from iaas.cloud import services as cloud
from iaas.hosting import services as hosting
from tests.factories import UserFactory, funded_wallet

pytestmark = pytest.mark.django_db(transaction=True)


def queries_of(purchase) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        purchase()
    return [q["sql"] for q in captured.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]


def buy_server(customer, wallet):
    return lambda: cloud.server_create(
        owner_id=customer.id, wallet_id=wallet.id, name="vm", plan_id="s-2vcpu-4gb"
    )


def test_a_purchase_with_a_reservation_makes_twelve_statements(catalog):
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    buy_server(customer, wallet)()  # the allowance row exists from now on
    sql = queries_of(buy_server(customer, wallet))
    # plan, server insert, allowance lock, wallet lock, wallet update, hold upsert,
    # reservation insert, FundsReserved recorded (an outbox row though nobody subscribes:
    # every published event is recorded), allowance update, charge insert, outbox insert,
    # and the month's usage record (the first hour counts towards the cap)
    assert len(sql) == 12, "\n".join(sql)
    assert sum("FOR NO KEY UPDATE" in q for q in sql) == 2  # allowance, then wallet


def test_a_purchase_inside_the_allowance_never_touches_the_wallet(catalog, settings):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 500, "hosting": 0}
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    buy_server(customer, wallet)()  # reserves 500 ahead
    sql = queries_of(buy_server(customer, wallet))
    # plan, server insert, allowance conditional update (locks and deducts in one
    # statement), charge insert, outbox insert, usage record
    assert len(sql) == 6, "\n".join(sql)
    assert not any("billing_wallet" in q for q in sql)


def test_the_first_purchase_in_a_context_creates_the_allowance_row(catalog):
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    sql = queries_of(
        lambda: hosting.subscription_create(
            owner_id=customer.id, wallet_id=wallet.id, domain="first.example", plan_id="web-starter"
        )
    )
    assert any("ON CONFLICT DO NOTHING" in q for q in sql)
    # + wallet view, allowance insert, allowance re-lock, and the savepoint around the
    # subscription insert (a taken domain is a 409, not a broken transaction)
    assert len(sql) == 11 + 3 + 2, "\n".join(sql)
