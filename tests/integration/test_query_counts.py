"""Queries per purchase, pinned: inside the allowance (the wallet row untouched) and
with a reservation from Billing. Measured as production runs it: the purchase is the
outermost transaction (no test transaction around it, so no savepoints)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from iaas.cloud import services as cloud
from iaas.hosting import services as hosting
from tests.api.conftest import client_for
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


def buy_hosting(customer, wallet, domain):
    return lambda: hosting.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain=domain, plan_id="web-starter"
    )


def test_a_server_purchase_with_a_reservation_makes_six_statements(catalog):
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    buy_server(customer, wallet)()  # the allowance row exists from now on
    sql = queries_of(buy_server(customer, wallet))
    # 1. the server inserted from its plan (a retired plan inserts nothing); 2. the
    # charge, ChargesRecorded and the month's usage record (the first hour counts towards
    # the cap); 3. the allowance locked; 4. the wallet locked, checked and reserved (one
    # UPDATE); 5. the hold, the reservation and FundsReserved (an outbox row though
    # nobody subscribes: every published event is recorded); 6. the allowance saved
    assert len(sql) == 6, "\n".join(sql)
    assert sum("FOR NO KEY UPDATE" in q for q in sql) == 2  # allowance, then wallet
    assert "cloud_serverplan" in sql[0]
    assert "INSERT INTO" in sql[0]
    outbox = "contracts_outboxmessage"
    assert all(table in sql[1] for table in ("cloud_charge", "cloud_usage", outbox))
    assert "FOR NO KEY UPDATE" in sql[2]
    assert sql[3].startswith("WITH locked AS (SELECT id, balance - reserved")
    assert all(table in sql[4] for table in ("billing_hold", "billing_reservation", outbox))
    assert sql[5].startswith('UPDATE "cloud_allowance"')


def test_a_hosting_purchase_with_a_reservation_makes_six_statements(catalog):
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=10_000)
    buy_hosting(customer, wallet, "first.example")()
    sql = queries_of(buy_hosting(customer, wallet, "second.example"))
    # no savepoint: a taken domain is an INSERT ... ON CONFLICT DO NOTHING that inserted nothing
    assert len(sql) == 6, "\n".join(sql)
    assert not any("SAVEPOINT" in q for q in sql)


def test_a_purchase_inside_the_allowance_never_touches_the_wallet(catalog, settings):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 500, "hosting": 2_000}
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=10_000)
    buy_server(customer, wallet)()  # reserves 500 ahead
    buy_hosting(customer, wallet, "first.example")()  # reserves 2,000 ahead
    for purchase in (buy_server(customer, wallet), buy_hosting(customer, wallet, "second.example")):
        sql = queries_of(purchase)
        # the service inserted from its plan, the charge with its event (and the usage),
        # and last the allowance's conditional update (locks, checks and deducts in one
        # statement), so the row a wallet's purchases share is held only until the commit
        assert len(sql) == 3, "\n".join(sql)
        assert "allowance" in sql[2]
        assert not any("billing_wallet" in q for q in sql)


def test_the_first_purchase_in_a_context_creates_the_allowance_row(catalog):
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    sql = queries_of(buy_hosting(customer, wallet, "first.example"))
    assert any("ON CONFLICT DO NOTHING" in q for q in sql)
    # + the wallet view, the allowance insert and its lock after the first lock found none
    assert len(sql) == 6 + 3, "\n".join(sql)


def test_the_portable_way_writes_the_same_purchase_in_more_statements(catalog, settings):
    settings.IAAS_FOLD_STATEMENTS = False
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    buy_server(customer, wallet)()
    sql = queries_of(buy_server(customer, wallet))
    # plan, server, charge, usage record, ChargesRecorded, allowance lock, wallet lock,
    # wallet update, hold, reservation, FundsReserved, allowance update: one write per
    # statement, as SQLite runs it
    assert len(sql) == 12, "\n".join(sql)


def test_a_purchase_over_http_with_an_idempotency_key(catalog):
    """The whole request as production runs it: the key's owner authenticated, the
    Idempotency-Key's lock and lookup, the purchase, the stored answer; no savepoint,
    no catalog or wallet read of the view's own, no usage read back for the answer."""
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    client = client_for(customer)

    def buy(key):
        body = {"name": "vm", "plan": "s-2vcpu-4gb", "wallet": str(wallet.id)}
        response = client.post("/api/v1/cloud/servers/", body, HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 201, response.content

    buy("first")  # the allowance row exists and the key's last use is recorded from now on
    sql = queries_of(lambda: buy("second"))
    # the API key and its owner; the key's advisory lock; the stored answer looked up;
    # the six statements of the purchase; the answer stored
    assert len(sql) == 1 + 1 + 1 + 6 + 1, "\n".join(sql)
    assert not any(q.startswith(("SAVEPOINT", "RELEASE")) for q in sql)
