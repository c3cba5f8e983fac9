"""Idempotency-Key (API.md, Stripe's semantics): replay, 422 for another body, 409
while the first request runs, what is stored and what is not, and the work and the
stored response committing together."""

from __future__ import annotations

import datetime as dt
import threading
from io import StringIO
from unittest import mock

import pytest
import time_machine
from django.core.management import call_command
from django.db import OperationalError, connection, connections
from django.utils import timezone

from iaas.api import idempotency
from iaas.api.idempotency import Scope
from iaas.api.models import IdempotencyKey
from iaas.billing.models import TopUp, Wallet
from iaas.cloud.models import Allowance as CloudAllowance
from iaas.cloud.models import Charge, Server
from iaas.contracts.models import OutboxMessage
from tests.api.conftest import assert_problem, client_for
from tests.factories import funded_wallet

KEY = "7c1e0a52-3d5f-4c71-9a0e-2f8b6d4e1a90"


class LockNotAvailable(Exception):
    sqlstate = "55P03"  # what psycopg raises on lock_timeout


def top_up(client, wallet, amount=500, key=KEY, **extra):
    return client.post(
        f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": amount}, HTTP_IDEMPOTENCY_KEY=key, **extra
    )


def buy_server(client, wallet, key=KEY, name="web"):
    body = {"name": name, "plan": "s-1vcpu-1gb", "wallet": str(wallet.id)}
    return client.post("/api/v1/cloud/servers/", body, HTTP_IDEMPOTENCY_KEY=key)


def balance(wallet) -> int:
    wallet.refresh_from_db()
    return wallet.balance


@pytest.mark.django_db
class TestReplay:
    def test_the_same_request_is_done_once_and_answered_the_same(self, api, wallet):
        first = top_up(api, wallet)
        assert first.status_code == 201
        assert "Idempotent-Replayed" not in first
        again = top_up(api, wallet)
        assert again.status_code == 201
        assert again["Idempotent-Replayed"] == "true"
        assert again.content == first.content
        assert balance(wallet) == 10_500
        assert TopUp.objects.filter(wallet=wallet).count() == 2  # the funding one and this one

    def test_the_same_json_in_other_bytes_is_the_same_request(self, api, wallet):
        top_up(api, wallet)
        again = api.generic(
            "POST",
            f"/api/v1/wallets/{wallet.id}/top-ups/",
            '{ "amount" :500 }',
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=KEY,
        )
        assert again["Idempotent-Replayed"] == "true"
        assert balance(wallet) == 10_500

    def test_a_purchase_is_replayed_not_bought_again(self, api, wallet, catalog):
        first = buy_server(api, wallet)
        again = buy_server(api, wallet)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert Server.objects.count() == 1
        assert Charge.objects.count() == 1

    def test_another_body_with_the_same_key_is_422_and_does_nothing(self, api, wallet):
        top_up(api, wallet, amount=500)
        assert_problem(top_up(api, wallet, amount=501), 422, "idempotency_key_reused")
        assert balance(wallet) == 10_500

    def test_the_key_is_scoped_to_the_path(self, api, wallet, customer):
        dollars = funded_wallet(customer, currency="USD")
        assert top_up(api, wallet).status_code == 201
        assert top_up(api, dollars).status_code == 201
        assert balance(dollars) == 500

    def test_the_key_is_scoped_to_the_customer(self, api, other_api, wallet, other_customer):
        theirs = funded_wallet(other_customer)
        assert top_up(api, wallet).status_code == 201
        theirs_response = top_up(other_api, theirs)
        assert theirs_response.status_code == 201
        assert "Idempotent-Replayed" not in theirs_response
        # Replaying someone else's stored 404 or response is impossible: their key, their record.
        assert_problem(top_up(other_api, wallet), 404, "not_found")
        assert balance(wallet) == 10_500

    def test_without_a_key_every_request_is_new(self, api, wallet):
        for _ in range(2):
            assert api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 500}).status_code == 201
        assert balance(wallet) == 11_000
        assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db
class TestWhatIsStored:
    def test_a_400_is_not_stored_so_the_client_can_correct_and_retry(self, api, wallet):
        assert_problem(top_up(api, wallet, amount="500"), 400, "validation_error")
        assert not IdempotencyKey.objects.exists()
        assert top_up(api, wallet, amount=500).status_code == 201

    def test_a_402_is_stored_and_replayed_even_after_the_wallet_is_funded(self, api, customer, catalog):
        empty = funded_wallet(customer)
        refused = buy_server(api, empty)
        assert_problem(refused, 402, "insufficient_funds")
        funded_wallet_top_up = api.post(f"/api/v1/wallets/{empty.id}/top-ups/", {"amount": 100})
        assert funded_wallet_top_up.status_code == 201
        replayed = buy_server(api, empty)
        assert replayed.status_code == 402
        assert replayed["Idempotent-Replayed"] == "true"
        assert replayed["Content-Type"] == "application/problem+json"
        assert replayed.content == refused.content
        assert not Server.objects.exists()
        assert buy_server(api, empty, key="a-new-key").status_code == 201

    def test_a_404_is_stored(self, api, other_customer, catalog):
        theirs = funded_wallet(other_customer, amount=1_000)
        assert_problem(buy_server(api, theirs), 404, "not_found")
        assert buy_server(api, theirs)["Idempotent-Replayed"] == "true"
        assert not Server.objects.exists()

    def test_a_409_is_stored(self, api, wallet):
        response = api.post("/api/v1/wallets/", {"currency": "EUR"}, HTTP_IDEMPOTENCY_KEY=KEY)
        assert_problem(response, 409, "wallet_exists")
        replay = api.post("/api/v1/wallets/", {"currency": "EUR"}, HTTP_IDEMPOTENCY_KEY=KEY)
        assert replay["Idempotent-Replayed"] == "true"

    def test_a_5xx_is_not_stored(self, api, wallet):
        with mock.patch("iaas.billing.api.views.services.top_up_open", side_effect=OperationalError("down")):
            assert_problem(top_up(api, wallet), 503, "service_unavailable")
        assert not IdempotencyKey.objects.exists()
        assert top_up(api, wallet).status_code == 201

    @pytest.mark.parametrize("key", ["", " leading-space", "x" * 256, "tab\tinside", "ünïcode"])
    def test_a_malformed_key_is_400(self, api, wallet, key):
        body = assert_problem(top_up(api, wallet, key=key), 400, "validation_error")
        assert "Idempotency-Key" in body["errors"]
        assert balance(wallet) == 10_000

    def test_a_key_of_255_visible_characters_is_fine(self, api, wallet):
        assert top_up(api, wallet, key="k" * 255).status_code == 201

    def test_a_release_request_attached_to_a_stored_402_is_published(self, api, customer, catalog, settings):
        settings.IAAS_RESERVE_AHEAD = {"cloud": 0, "hosting": 1_000}
        wallet = funded_wallet(customer, amount=1_000)
        api.post(
            "/api/v1/hosting/subscriptions/",
            {"domain": "example.com", "plan": "web-starter", "wallet": str(wallet.id)},
        )
        body = assert_problem(buy_server(api, wallet), 402, "insufficient_funds")
        assert "retry" in body["detail"]
        assert OutboxMessage.objects.filter(event_type="ReleaseRequested").exists()
        assert IdempotencyKey.objects.filter(status_code=402).exists()

    def test_a_refusal_is_stored_after_its_work_rolled_back(self, api, customer, catalog):
        """A 402's work rolls back whole (no server, no allowance row, no hold) before the
        refusal is stored, in a second transaction (a success's needs no savepoint:
        tests/integration/test_query_counts.py)."""
        empty = funded_wallet(customer)
        assert_problem(buy_server(api, empty), 402, "insufficient_funds")
        assert not Server.objects.exists()
        assert not CloudAllowance.objects.exists()
        assert IdempotencyKey.objects.get().status_code == 402

    def test_a_refusal_gives_way_to_an_answer_stored_while_it_rolled_back(self, api, customer, catalog):
        """Between the refusal's rollback and its storing, another request with the key
        (its lock went with the rollback) bought the server: that answer is the key's,
        and the refused request replays it."""
        wallet = funded_wallet(customer)

        def the_duplicate_runs_now(error):
            # The same request again, once the wallet has money (a top-up meanwhile).
            meanwhile = client_for(customer)
            assert top_up(meanwhile, wallet, amount=1_000, key="another-key").status_code == 201
            assert buy_server(meanwhile, wallet).status_code == 201

        with mock.patch.object(idempotency, "run_after_rollback", side_effect=the_duplicate_runs_now):
            answered = buy_server(api, wallet)
        assert answered.status_code == 201
        assert answered["Idempotent-Replayed"] == "true"
        assert Server.objects.count() == 1
        assert IdempotencyKey.objects.get(key=KEY).status_code == 201


@pytest.mark.django_db
class TestExpiry:
    def test_after_24_hours_the_key_is_new_again(self, api, wallet):
        top_up(api, wallet, amount=500)
        with time_machine.travel(timezone.now() + dt.timedelta(hours=24, seconds=1)):
            again = top_up(api, wallet, amount=700)
        assert again.status_code == 201
        assert "Idempotent-Replayed" not in again
        assert balance(wallet) == 11_200

    def test_within_24_hours_it_replays(self, api, wallet):
        top_up(api, wallet)
        with time_machine.travel(timezone.now() + dt.timedelta(hours=23, minutes=59)):
            assert top_up(api, wallet)["Idempotent-Replayed"] == "true"

    def test_purge_deletes_only_expired_keys(self, api, wallet):
        with time_machine.travel(timezone.now() - dt.timedelta(days=2)):
            top_up(api, wallet, key="old")
        top_up(api, wallet, key="fresh")
        out = StringIO()
        call_command("purge_idempotency_keys", "--dry-run", stdout=out)
        assert "1 expired" in out.getvalue()
        assert IdempotencyKey.objects.count() == 2
        call_command("purge_idempotency_keys", stdout=out)
        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]


@pytest.mark.django_db(transaction=True)
class TestAtomicity:
    def test_a_purchase_never_commits_without_its_key(self, api, wallet, catalog):
        """The key's record fails to be written: the purchase rolls back with it."""
        with mock.patch.object(idempotency, "store", side_effect=OperationalError("disk full")):
            assert_problem(buy_server(api, wallet), 503, "service_unavailable")
        assert not Server.objects.exists()
        assert not Charge.objects.exists()
        assert Wallet.objects.get(pk=wallet.pk).reserved == 0
        assert not OutboxMessage.objects.filter(event_type="ChargeRecorded").exists()

    def test_a_key_never_commits_without_its_purchase(self, customer, wallet, catalog):
        client = client_for(customer)
        client.raise_request_exception = False
        with mock.patch("iaas.cloud.api.views.ServerSerializer.data", new_callable=mock.PropertyMock) as data:
            data.side_effect = RuntimeError("crash after the purchase, before the answer")
            assert buy_server(client, wallet).status_code == 500
        assert not IdempotencyKey.objects.exists()
        assert not Server.objects.exists()

    def test_a_lock_timeout_is_retried_then_answered_503(self, api, wallet, catalog, settings):
        settings.IAAS_TRANSACTION_ATTEMPTS = 2
        timeout = OperationalError("canceling statement due to lock timeout")
        timeout.__cause__ = LockNotAvailable()
        with mock.patch("iaas.cloud.api.views.ServerListCreateView.create", side_effect=timeout) as create:
            response = buy_server(api, wallet)
        assert_problem(response, 503, "service_unavailable")
        assert response["Retry-After"] == "1"
        assert create.call_count == 2
        assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.concurrency
class TestConcurrentDuplicates:
    def test_a_duplicate_while_the_first_runs_is_409_then_the_first_is_replayed(
        self, customer, wallet, catalog
    ):
        """Two threads, two connections: the first request is held inside its work."""
        from iaas.billing import services as billing_services

        inside, release = threading.Event(), threading.Event()
        real_top_up = billing_services.top_up_open

        def slow_top_up(**kwargs):
            inside.set()
            assert release.wait(10)
            return real_top_up(**kwargs)

        results = {}

        def first_request():
            try:
                results["first"] = top_up(client_for(customer), wallet)
            finally:
                connections.close_all()

        with mock.patch("iaas.billing.api.views.services.top_up_open", side_effect=slow_top_up):
            thread = threading.Thread(target=first_request)
            thread.start()
            assert inside.wait(10)
            duplicate = top_up(client_for(customer), wallet)
            release.set()
            thread.join(10)

        assert_problem(duplicate, 409, "idempotency_request_in_progress")
        assert results["first"].status_code == 201
        replay = top_up(client_for(customer), wallet)
        assert replay["Idempotent-Replayed"] == "true"
        assert replay.content == results["first"].content
        assert balance(wallet) == 10_500
        assert IdempotencyKey.objects.count() == 1

    def test_a_held_key_lock_is_409_and_nothing_is_stored(self, customer, wallet, catalog):
        scope = Scope(owner_id=customer.pk, method="POST", path="/api/v1/cloud/servers/", key=KEY)
        held, done = threading.Event(), threading.Event()

        def hold_the_lock():
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_lock(%s)", [scope.lock_id()])
                    held.set()
                    done.wait(10)
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [scope.lock_id()])
            finally:
                connections.close_all()

        thread = threading.Thread(target=hold_the_lock)
        thread.start()
        assert held.wait(10)
        try:
            assert_problem(buy_server(client_for(customer), wallet), 409, "idempotency_request_in_progress")
            assert not Server.objects.exists()
            assert not IdempotencyKey.objects.exists()
        finally:
            done.set()
            thread.join(10)
        assert buy_server(client_for(customer), wallet).status_code == 201

    def test_many_simultaneous_duplicates_buy_once(self, customer, wallet, catalog):
        barrier = threading.Barrier(6)
        statuses = []

        def send():
            try:
                barrier.wait(10)
                statuses.append(buy_server(client_for(customer), wallet).status_code)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert statuses.count(201) >= 1
        assert set(statuses) <= {201, 409}
        assert Server.objects.count() == 1
        assert Charge.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", ["wallets", "top-ups", "servers", "subscriptions"])
def test_every_post_replays(api, customer, catalog, endpoint):
    wallet = funded_wallet(customer, amount=10_000)
    path, body = {
        "wallets": ("/api/v1/wallets/", {"currency": "USD"}),
        "top-ups": (f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 100}),
        "servers": (
            "/api/v1/cloud/servers/",
            {"name": "web", "plan": "s-1vcpu-1gb", "wallet": str(wallet.id)},
        ),
        "subscriptions": (
            "/api/v1/hosting/subscriptions/",
            {"domain": "example.com", "plan": "web-starter", "wallet": str(wallet.id)},
        ),
    }[endpoint]
    first = api.post(path, body, HTTP_IDEMPOTENCY_KEY=KEY)
    again = api.post(path, body, HTTP_IDEMPOTENCY_KEY=KEY)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert_problem(
        api.post(path, {**body, "extra": 1}, HTTP_IDEMPOTENCY_KEY=KEY), 422, "idempotency_key_reused"
    )
