"""/metrics as Prometheus and an operator see it: hidden without a token, refused with a
wrong one; the request metrics, the core's gauges read from the rows they watch, and
the purchase counters moved by real purchases over the API."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from iaas.contracts.models import OutboxMessage
from iaas.notifications import webhooks
from iaas.notifications.models import WebhookDelivery, WebhookMessage
from iaas.operations.models import DeadLetter, JobRun
from iaas.operations.schedule import JOBS
from tests.api.conftest import assert_problem, client_for
from tests.factories import funded_wallet

from .conftest import NOW

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789"
SERVERS = "/api/v1/cloud/servers/"


@pytest.fixture
def api(customer):
    return client_for(customer)


@pytest.fixture
def metrics_token(settings):
    settings.IAAS_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, authorization: str = f"Bearer {TOKEN}") -> dict[tuple[str, frozenset], float]:
    """The scrape's samples: {(name, labels): value}."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"].startswith("max-age=0")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def sample(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def counted(name: str, **labels) -> float:
    """A counter's value in this process (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0


# --- Who may scrape -----------------------------------------------------------------------


def test_without_a_token_configured_there_is_no_metrics_page(client, settings):
    settings.IAAS_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize("authorization", [None, f"Bearer {TOKEN}x", "Bearer wrong", f"Token {TOKEN}", TOKEN])
def test_a_wrong_or_missing_token_is_401(client, metrics_token, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"iaas_" not in response.content


def test_the_right_token_scrapes_the_request_metrics(client, metrics_token):
    client.get("/healthz")
    samples = scrape(client, f"bearer {TOKEN}")  # the scheme in any case
    assert sample(samples, "django_http_requests_total_by_method_total", method="GET") >= 1
    assert sample(samples, "django_http_responses_total_by_status_total", status="200") >= 1
    assert any(
        name == "django_http_requests_latency_including_middlewares_seconds_count" for name, _ in samples
    )


# --- The core's gauges ------------------------------------------------------------------------


def outbox_row(status: str, age: dt.timedelta) -> OutboxMessage:
    return OutboxMessage.objects.create(
        event_id=uuid.uuid4(),
        event_type="ChargesRecorded",
        handler="billing.settle",
        payload={},
        status=status,
        created_at=NOW - age,
    )


def dead_letter(status: str) -> DeadLetter:
    return DeadLetter.objects.create(
        message_id=uuid.uuid4().hex,
        task="iaas.jobs.part",
        queue="iaas.partition.0",
        routing_key="iaas.partition.0",
        reason="delivery_limit",
        body="[]",
        content_type="application/json",
        content_encoding="utf-8",
        status=status,
    )


def job_run(job: str, status: str, started: dt.datetime, took: dt.timedelta | None = None) -> JobRun:
    return JobRun.objects.create(
        job=job,
        status=status,
        parts=1,
        at=started,
        started_at=started,
        finished_at=started + took if took is not None else None,
    )


def test_the_outbox_and_dead_letter_gauges_count_the_planted_rows(client, metrics_token, clock):
    outbox_row("pending", dt.timedelta(seconds=30))
    outbox_row("pending", dt.timedelta(minutes=7, seconds=5))
    outbox_row("failed", dt.timedelta(hours=2))  # older, but not pending
    outbox_row("done", dt.timedelta(days=1))
    dead_letter("dead")
    dead_letter("dead")
    dead_letter("retried")
    dead_letter("discarded")

    samples = scrape(client)

    assert sample(samples, "iaas_outbox_pending") == 2
    assert sample(samples, "iaas_outbox_oldest_pending_age_seconds") == 425
    assert sample(samples, "iaas_outbox_failed") == 1
    assert sample(samples, "iaas_dead_letters") == 2


def test_an_empty_outbox_is_zero_pending_of_age_zero(client, metrics_token, clock):
    outbox_row("done", dt.timedelta(days=1))
    samples = scrape(client)
    assert sample(samples, "iaas_outbox_pending") == 0
    assert sample(samples, "iaas_outbox_oldest_pending_age_seconds") == 0
    assert sample(samples, "iaas_dead_letters") == 0


def test_each_job_shows_its_last_success_and_its_latest_status(client, metrics_token, clock):
    hour = dt.timedelta(hours=1)
    job_run("meter", "succeeded", NOW - 3 * hour, took=dt.timedelta(seconds=90))
    job_run("meter", "failed", NOW - 2 * hour, took=dt.timedelta(seconds=10))
    job_run("meter", "running", NOW - hour)
    job_run("settle", "succeeded", NOW - 2 * hour, took=dt.timedelta(minutes=2))

    samples = scrape(client)

    meter_success = (NOW - 3 * hour + dt.timedelta(seconds=90)).timestamp()
    assert sample(samples, "iaas_job_last_success_timestamp_seconds", job="meter") == meter_success
    assert sample(samples, "iaas_job_last_success_duration_seconds", job="meter") == 90
    assert sample(samples, "iaas_job_last_success_duration_seconds", job="settle") == 120
    statuses = {
        status: sample(samples, "iaas_job_last_run_status", job="meter", status=status)
        for status in ("running", "succeeded", "failed")
    }
    assert statuses == {"running": 1, "succeeded": 0, "failed": 0}
    assert sample(samples, "iaas_job_last_run_status", job="settle", status="succeeded") == 1
    # A job that never ran: every status 0, its last success 0, no duration.
    for name in set(JOBS) - {"meter", "settle"}:
        assert sample(samples, "iaas_job_last_success_timestamp_seconds", job=name) == 0
        assert sample(samples, "iaas_job_last_success_duration_seconds", job=name) is None
        assert sample(samples, "iaas_job_last_run_status", job=name, status="failed") == 0


def test_reconcile_shows_its_latest_finished_run(client, metrics_token, clock):
    hour = dt.timedelta(hours=1)
    assert sample(scrape(client), "iaas_reconcile_last_result") is None  # no run on the task engine yet

    job_run("reconcile", "succeeded", NOW - 3 * hour, took=dt.timedelta(seconds=40))
    samples = scrape(client)
    assert sample(samples, "iaas_reconcile_last_result") == 1
    finished = (NOW - 3 * hour + dt.timedelta(seconds=40)).timestamp()
    assert sample(samples, "iaas_reconcile_last_run_timestamp_seconds") == finished

    job_run("reconcile", "failed", NOW - 2 * hour, took=dt.timedelta(seconds=50))
    job_run("reconcile", "running", NOW - hour)  # not finished: the failed run still stands
    samples = scrape(client)
    assert sample(samples, "iaas_reconcile_last_result") == 0
    finished = (NOW - 2 * hour + dt.timedelta(seconds=50)).timestamp()
    assert sample(samples, "iaas_reconcile_last_run_timestamp_seconds") == finished
    assert sample(samples, "iaas_job_last_success_timestamp_seconds", job="reconcile") == (
        (NOW - 3 * hour + dt.timedelta(seconds=40)).timestamp()
    )


def test_notifications_waiting_are_counted_with_how_late_the_most_overdue_is(
    client, metrics_token, clock, customer
):
    endpoint = webhooks.endpoint_create(
        owner_id=customer.pk, url="http://127.0.0.1:9/", event_types=["top_up.succeeded"]
    ).endpoint
    for due, status in (
        (NOW - dt.timedelta(seconds=90), "pending"),
        (NOW + dt.timedelta(hours=1), "pending"),
        (NOW - dt.timedelta(days=1), "succeeded"),
    ):
        message = WebhookMessage.objects.create(
            id=uuid.uuid4(), owner=customer, event_type="top_up.succeeded", occurred_at=NOW, body="{}"
        )
        WebhookDelivery.objects.create(
            message=message, endpoint=endpoint, owner=customer, event_type="top_up.succeeded",
            status=status, next_attempt_at=due,
        )  # fmt: skip
    samples = scrape(client)
    assert sample(samples, "iaas_notifications_pending", kind="webhook") == 2
    assert sample(samples, "iaas_notifications_overdue_seconds", kind="webhook") == 90
    assert sample(samples, "iaas_notifications_pending", kind="email") == 0
    assert sample(samples, "iaas_notifications_overdue_seconds", kind="email") == 0


def test_the_gauges_take_few_statements(client, metrics_token, django_assert_max_num_queries):
    # outbox, dead letters, every job's runs, webhook deliveries and emails waiting
    with django_assert_max_num_queries(5):
        scrape(client)


# --- Purchases and refusals -----------------------------------------------------------------


def buy_server(client, wallet, **headers):
    return client.post(SERVERS, {"name": "web-1", "plan": "s-2vcpu-4gb", "wallet": str(wallet.id)}, **headers)


def test_a_purchase_counts_once_its_transaction_commits(
    api, wallet, catalog, django_capture_on_commit_callbacks
):
    before = counted("iaas_purchases_total", context="cloud")
    with django_capture_on_commit_callbacks() as callbacks:
        assert buy_server(api, wallet).status_code == 201
        # Inside the test's transaction nothing has committed yet.
        assert counted("iaas_purchases_total", context="cloud") == before
    for callback in callbacks:
        callback()
    assert counted("iaas_purchases_total", context="cloud") == before + 1


@pytest.mark.django_db(transaction=True)
def test_a_committed_purchase_counts_once_and_its_replay_not_again(
    api, client, wallet, catalog, metrics_token
):
    before = counted("iaas_purchases_total", context="cloud")
    first = buy_server(api, wallet, HTTP_IDEMPOTENCY_KEY="buy-web-1")
    replay = buy_server(api, wallet, HTTP_IDEMPOTENCY_KEY="buy-web-1")
    assert (first.status_code, replay.status_code, replay["Idempotent-Replayed"]) == (201, 201, "true")
    assert counted("iaas_purchases_total", context="cloud") == before + 1
    assert sample(scrape(client), "iaas_purchases_total", context="cloud") == before + 1


@pytest.mark.parametrize(
    ("path", "body", "context"),
    [
        ("/api/v1/hosting/subscriptions/", {"domain": "example.com", "plan": "web-starter"}, "hosting"),
        ("/api/v1/storage/volumes/", {"name": "data-1", "plan": "ssd", "size_gb": 100}, "storage"),
    ],
)
def test_each_context_counts_its_purchases(
    api, wallet, catalog, django_capture_on_commit_callbacks, path, body, context
):
    before = counted("iaas_purchases_total", context=context)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(path, body | {"wallet": str(wallet.id)}).status_code == 201
    assert counted("iaas_purchases_total", context=context) == before + 1


def test_a_refused_purchase_counts_by_its_reason_and_not_as_a_purchase(api, customer, catalog):
    purchases = counted("iaas_purchases_total", context="cloud")
    poor = counted("iaas_purchase_refusals_total", context="cloud", reason="insufficient_funds")
    assert_problem(buy_server(api, funded_wallet(customer, amount=3)), 402, "insufficient_funds")
    dollars = funded_wallet(customer, amount=10_000, currency="USD")
    mismatch = counted("iaas_purchase_refusals_total", context="cloud", reason="currency_mismatch")
    assert_problem(buy_server(api, dollars), 409, "currency_mismatch")

    assert counted("iaas_purchase_refusals_total", context="cloud", reason="insufficient_funds") == poor + 1
    assert (
        counted("iaas_purchase_refusals_total", context="cloud", reason="currency_mismatch") == mismatch + 1
    )
    assert counted("iaas_purchases_total", context="cloud") == purchases


def test_a_refusal_under_an_idempotency_key_counts_once(api, client, customer, catalog, metrics_token):
    empty = funded_wallet(customer, amount=3)
    before = counted("iaas_purchase_refusals_total", context="cloud", reason="insufficient_funds")
    for _ in range(2):  # the second is the stored refusal, replayed
        assert_problem(buy_server(api, empty, HTTP_IDEMPOTENCY_KEY="poor-1"), 402, "insufficient_funds")
    assert counted("iaas_purchase_refusals_total", context="cloud", reason="insufficient_funds") == before + 1
    scraped = scrape(client)
    assert sample(scraped, "iaas_purchase_refusals_total", context="cloud", reason="insufficient_funds") == (
        before + 1
    )


def all_refusals() -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "iaas_purchase_refusals"
        for sample in family.samples
        if sample.name == "iaas_purchase_refusals_total"
    )


def test_a_malformed_purchase_is_no_refusal(api, wallet, catalog):
    before = all_refusals()
    response = api.post(SERVERS, {"name": "web-1", "plan": "nope", "wallet": str(wallet.id)})
    assert_problem(response, 400, "validation_error")
    assert all_refusals() == before
