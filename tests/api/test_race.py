"""The seed scenario over HTTP: a wallet that affords a server or a hosting plan, not
both; both purchases sent at once from two threads through the live server (a real
threaded HTTP server, a database connection per request). Every round: exactly one
201 and one 402 insufficient_funds, and the books balance at the end."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from iaas.cloud.models import ServerPlan
from iaas.contracts import bus
from iaas.hosting.models import HostingPlan
from tests.factories import UserFactory, api_key_for, funded_wallet

ROUNDS = 30
SERVER_PLAN = "s-8vcpu-16gb"
HOSTING_PLAN = "web-starter"


def post(url: str, token: str, body: dict) -> tuple[int, dict, float, float]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response), started, time.perf_counter()
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), started, time.perf_counter()


@pytest.mark.django_db(transaction=True)
@pytest.mark.concurrency
def test_a_wallet_that_affords_one_buys_exactly_one_over_http(live_server, catalog, assert_invariants):
    server_price = ServerPlan.objects.get(pk=SERVER_PLAN).price_per_hour
    hosting_price = HostingPlan.objects.get(pk=HOSTING_PLAN).price_per_month
    budget = max(server_price, hosting_price)
    assert budget < server_price + hosting_price

    overlapping = 0
    winners = {"cloud": 0, "hosting": 0}
    for round_number in range(ROUNDS):
        customer = UserFactory()
        wallet = funded_wallet(customer, amount=budget)
        token = api_key_for(customer)
        purchases = {
            "cloud": (
                f"{live_server.url}/api/v1/cloud/servers/",
                {"name": "race", "plan": SERVER_PLAN, "wallet": str(wallet.id)},
            ),
            "hosting": (
                f"{live_server.url}/api/v1/hosting/subscriptions/",
                {
                    "domain": f"race-{uuid.uuid4().hex[:12]}.example",
                    "plan": HOSTING_PLAN,
                    "wallet": str(wallet.id),
                },
            ),
        }
        barrier = threading.Barrier(2)
        results = {}

        def send(name, url, body, barrier=barrier, results=results, token=token):
            barrier.wait(10)
            results[name] = post(url, token, body)

        threads = [
            threading.Thread(target=send, args=(name, *purchase)) for name, purchase in purchases.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        statuses = sorted(status for status, *_ in results.values())
        assert statuses == [201, 402], (round_number, results)
        [loser] = [body for status, body, *_ in results.values() if status == 402]
        assert loser["code"] == "insufficient_funds"
        winners[next(name for name, (status, *_) in results.items() if status == 201)] += 1
        (_, _, start_a, end_a), (_, _, start_b, end_b) = results.values()
        overlapping += start_a < end_b and start_b < end_a

    assert sum(winners.values()) == ROUNDS
    assert overlapping > 0  # the purchases were in flight together
    bus.deliver_pending()
    assert_invariants()
