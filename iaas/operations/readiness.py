"""Whether this process can serve: what /readyz checks. /healthz is liveness (the
database answers); readiness adds what a deployment can get wrong: a migration not yet
applied, and the broker (when one is configured) out of reach. An orchestrator takes a
process that is not ready out of the load balancer; it does not restart it."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

from iaas.celery import app as celery_app

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2

# Once every migration is applied, it stays so for this process's life (a migration the
# deployment adds comes with new code, in new processes): it is checked until then only.
_all_migrations_applied = False


def database() -> str:
    """ "ok", "unreachable" or "migrations pending"."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        if not migrations_applied():
            return "migrations pending"
    except DatabaseError as error:
        logger.warning("not ready: the database is unreachable: %s", error)
        return "unreachable"
    return "ok"


def migrations_applied() -> bool:
    global _all_migrations_applied
    if not _all_migrations_applied:
        executor = MigrationExecutor(connection)
        _all_migrations_applied = not executor.migration_plan(executor.loader.graph.leaf_nodes())
    return _all_migrations_applied


def broker() -> str:
    """ "ok", "unreachable" or "not configured" (no CELERY_BROKER_URL: the work runs from
    cron, nothing needs a broker). An answer is reused for BROKER_ANSWER_SECONDS, so a
    probe every second does not open a connection to the broker every second."""
    if not settings.CELERY_BROKER_URL:
        return "not configured"
    answered_at, answer = _broker_answer
    if answer and time.monotonic() - answered_at < BROKER_ANSWER_SECONDS:
        return answer
    answer = _broker_check()
    _broker_answer[:] = [time.monotonic(), answer]
    return answer


BROKER_ANSWER_SECONDS = 5.0
_broker_answer: list = [0.0, ""]


def _broker_check() -> str:
    # The app's connection: the broker's options (TLS, heartbeat) as the workers have them.
    broker_connection = celery_app.connection_for_read(
        settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_SECONDS
    )
    try:
        broker_connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as error:  # kombu's OperationalError, or what a malformed URL raises
        logger.warning("not ready: the broker is unreachable: %s", error)
        return "unreachable"
    finally:
        broker_connection.release()
    return "ok"
