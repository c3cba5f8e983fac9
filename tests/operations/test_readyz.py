"""/readyz: ready when the database answers with every migration applied, else 503
naming what failed; the broker (when one is configured) is checked and reported, and one
out of reach is "degraded", still 200 (an app host sells without it). /healthz stays the
liveness check (the database only). The broker tests use the RabbitMQ these
machines run: without it they fail, they are never skipped."""

from __future__ import annotations

import time

import pytest
from django.conf import settings as project_settings
from django.db import OperationalError
from django.db.migrations.executor import MigrationExecutor

from iaas.operations import readiness

pytestmark = pytest.mark.django_db

RABBITMQ = project_settings.CELERY_BROKER_URL  # the test settings' broker: the RabbitMQ these machines run
REFUSING = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens on port 1: refused at once


@pytest.fixture(autouse=True)
def _migrations_unchecked(monkeypatch):
    """Each test starts as a new process would: the migrations not checked yet, the
    broker not asked yet."""
    monkeypatch.setattr(readiness, "_all_migrations_applied", False)
    monkeypatch.setattr(readiness, "_broker_answer", [0.0, ""])


def ready(client):
    response = client.get("/readyz")
    assert response["Cache-Control"].startswith("max-age=0")
    assert "no-store" in response["Cache-Control"]
    return response.status_code, response.json()


def test_ready_with_the_database_and_no_broker_configured(client, settings):
    settings.CELERY_BROKER_URL = ""
    assert ready(client) == (200, {"status": "ready", "database": "ok", "broker": "not configured"})


def test_ready_with_the_real_broker(client, settings):
    settings.CELERY_BROKER_URL = RABBITMQ
    assert ready(client) == (200, {"status": "ready", "database": "ok", "broker": "ok"})


def test_a_broker_that_refuses_is_reported_soon_and_the_app_stays_ready(client, settings):
    settings.CELERY_BROKER_URL = REFUSING
    started = time.monotonic()
    assert ready(client) == (200, {"status": "degraded", "database": "ok", "broker": "unreachable"})
    assert time.monotonic() - started < readiness.BROKER_TIMEOUT_SECONDS + 1


def test_the_brokers_answer_is_reused_for_a_few_seconds(client, settings, monkeypatch):
    settings.CELERY_BROKER_URL = RABBITMQ
    asked = []
    real_check = readiness._broker_check
    monkeypatch.setattr(readiness, "_broker_check", lambda: asked.append(1) or real_check())
    for _ in range(3):
        assert ready(client)[1]["broker"] == "ok"
    assert len(asked) == 1


def test_a_database_that_does_not_answer_is_503(client, settings, monkeypatch):
    settings.CELERY_BROKER_URL = ""

    class DownCursor:
        def __enter__(self):
            raise OperationalError("connection refused")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(readiness.connection, "cursor", lambda: DownCursor())
    assert ready(client) == (
        503,
        {"status": "unavailable", "database": "unreachable", "broker": "not configured"},
    )


def test_a_migration_not_applied_is_503_until_it_is(client, settings, monkeypatch):
    settings.CELERY_BROKER_URL = ""
    plan = [("a migration", False)]
    checked = []
    real_plan = MigrationExecutor.migration_plan

    def migration_plan(executor, targets):
        checked.append(targets)
        return plan if plan else real_plan(executor, targets)

    monkeypatch.setattr(MigrationExecutor, "migration_plan", migration_plan)
    assert ready(client) == (
        503,
        {"status": "unavailable", "database": "migrations pending", "broker": "not configured"},
    )

    plan.clear()  # the deployment's migrate ran
    assert ready(client)[0] == 200
    assert ready(client)[0] == 200
    assert len(checked) == 2  # once all applied, this process does not look again


def test_healthz_stays_the_liveness_check(client, settings):
    settings.CELERY_BROKER_URL = REFUSING
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "database": "ok"})
