"""What /metrics shows: the request metrics django-prometheus counts, the business
counters of ``iaas.common.metrics``, and the core's gauges, read from the database when
Prometheus scrapes (a few indexed reads; nothing is kept between scrapes).

The gauges say whether the background work keeps up: events waiting in the outbox and
for how long, deliveries that gave up, task messages dead-lettered, and each scheduled
job's last success and last status (from its runs, ``JobRun``). With several worker
processes (gunicorn), ``PROMETHEUS_MULTIPROC_DIR`` makes every process write its counters
to files there, and a scrape, whichever worker serves it, adds them all up."""

from __future__ import annotations

import datetime as dt
import hmac
import os
from collections.abc import Iterable, Iterator
from functools import cache

from django.db import connection
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from iaas.contracts.models import OutboxMessage
from iaas.notifications.models import OutgoingEmail, WebhookDelivery

from .models import DeadLetter, JobRun
from .schedule import JOBS

RECONCILE = "reconcile"


def exposition() -> tuple[bytes, str]:
    """The scrape's body and content type: this process's metrics (or every process's, in
    multiprocess mode) and the core's gauges."""
    return generate_latest(_Scrape(process_metrics(), CoreCollector())), CONTENT_TYPE_LATEST


def process_metrics() -> Collector:
    """Every worker's counters from PROMETHEUS_MULTIPROC_DIR when it is set, else this
    process's registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return MultiProcessCollector(None)
    return REGISTRY


def bearer_accepted(authorization: str, token: str) -> bool:
    """Whether ``Authorization: Bearer <token>`` names the token (compared in constant time)."""
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


class _Scrape:
    """Several collectors as one, for generate_latest."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


class CoreCollector:
    """The core's gauges, computed at scrape time (read only)."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from outbox_gauges(now)
        yield dead_letters_gauge()
        runs = latest_runs()
        yield from job_gauges(runs)
        yield from reconcile_gauges(runs)
        yield from notification_gauges(now)


# --- The outbox ---------------------------------------------------------------------------


def outbox_gauges(now: dt.datetime) -> list[Metric]:
    """One read of the undelivered rows (pending and failed), through the partial index
    that holds only those (``outbox_undelivered``): its cost grows with the backlog, never
    with the delivered history."""
    counts = OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE).aggregate(
        pending=Count("pk", filter=Q(status=OutboxMessage.Status.PENDING)),
        oldest=Min("created_at", filter=Q(status=OutboxMessage.Status.PENDING)),
        failed=Count("pk", filter=Q(status=OutboxMessage.Status.FAILED)),
    )
    oldest = counts["oldest"]
    return [
        GaugeMetricFamily(
            "iaas_outbox_pending", "Outbox rows waiting for delivery.", value=counts["pending"]
        ),
        GaugeMetricFamily(
            "iaas_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row waiting for delivery (0 when none waits).",
            value=max((now - oldest).total_seconds(), 0) if oldest else 0,
        ),
        GaugeMetricFamily(
            "iaas_outbox_failed",
            "Outbox rows whose delivery gave up retrying, waiting for an operator (the admin's retry "
            "or deliver_events --retry-failed).",
            value=counts["failed"],
        ),
    ]


# --- Customers' notifications ------------------------------------------------------------


def notification_gauges(now: dt.datetime) -> list[Metric]:
    """Webhook deliveries and emails waiting to be sent, and how late the most overdue is
    (a sender that stopped shows here first), each read through its partial index of
    pending rows."""
    pending = GaugeMetricFamily(
        "iaas_notifications_pending",
        "Webhook deliveries and emails waiting to be sent (retries included).",
        labels=["kind"],
    )
    overdue = GaugeMetricFamily(
        "iaas_notifications_overdue_seconds",
        "How long the most overdue webhook delivery or email has been due (0 when none is).",
        labels=["kind"],
    )
    for kind, rows in (
        ("webhook", WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)),
        ("email", OutgoingEmail.objects.filter(status=OutgoingEmail.Status.PENDING)),
    ):
        counts = rows.aggregate(count=Count("pk"), due=Min("next_attempt_at"))
        pending.add_metric([kind], counts["count"])
        due = counts["due"]
        overdue.add_metric([kind], max((now - due).total_seconds(), 0) if due else 0)
    return [pending, overdue]


# --- The task engine ----------------------------------------------------------------------


def dead_letters_gauge() -> Metric:
    return GaugeMetricFamily(
        "iaas_dead_letters",
        "Task messages the broker dead-lettered, not yet retried or discarded by an operator.",
        value=DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).count(),
    )


def latest_runs() -> dict[tuple[str, str], JobRun]:
    """Per job, its latest run, its latest successful run and its latest finished run:
    one statement, a LIMIT 1 read of the (job, -started_at) index for each. Keyed by
    (kind, job); a kind a job has no run of is absent."""
    runs = JobRun.objects.raw(_latest_runs_sql(), list(JOBS))
    return {(run.kind, run.job): run for run in runs}


@cache
def _latest_runs_sql() -> str:
    """Plain SQL, written once per process: built by the ORM, the per-job branches cost
    more to build and to plan than to run. SQLite runs it too."""
    table = connection.ops.quote_name(JobRun._meta.db_table)
    succeeded, failed = JobRun.Status.SUCCEEDED.value, JobRun.Status.FAILED.value

    def latest(kind: str, condition: str = "") -> str:
        return (
            f"SELECT '{kind}' AS kind, (SELECT id FROM {table} WHERE job = listed.name{condition} "  # noqa: S608
            f"ORDER BY started_at DESC LIMIT 1) AS run_id FROM listed"
        )

    kinds = " UNION ALL ".join(
        [
            latest("latest"),
            latest("succeeded", f" AND status = '{succeeded}'"),
            latest("finished", f" AND status IN ('{succeeded}', '{failed}')"),
        ]
    )
    names = ", ".join(["(%s)"] * len(JOBS))
    return (
        f"WITH listed AS (SELECT column1 AS name FROM (VALUES {names}) AS job_names), "  # noqa: S608
        f"kinds AS ({kinds}) "
        f"SELECT run.id, run.job, run.status, run.started_at, run.finished_at, kinds.kind "
        f"FROM kinds JOIN {table} run ON run.id = kinds.run_id"
    )


def job_gauges(runs: dict[tuple[str, str], JobRun]) -> list[Metric]:
    last_success = GaugeMetricFamily(
        "iaas_job_last_success_timestamp_seconds",
        "When each scheduled job's latest successful run finished (unix time; 0: no successful run "
        "in the history kept).",
        labels=["job"],
    )
    duration = GaugeMetricFamily(
        "iaas_job_last_success_duration_seconds",
        "How long each scheduled job's latest successful run took, from its fan-out to its last part.",
        labels=["job"],
    )
    status = GaugeMetricFamily(
        "iaas_job_last_run_status",
        "Each scheduled job's latest run: 1 for its status (running, succeeded, failed), 0 for the "
        "others (all 0: no run in the history kept).",
        labels=["job", "status"],
    )
    for name in JOBS:
        succeeded = runs.get(("succeeded", name))
        last_success.add_metric([name], _unix_time(succeeded.finished_at) if succeeded else 0)
        if succeeded and succeeded.duration is not None:
            duration.add_metric([name], succeeded.duration.total_seconds())
        latest = runs.get(("latest", name))
        for value in JobRun.Status.values:
            status.add_metric([name, value], 1 if latest and latest.status == value else 0)
    return [last_success, duration, status]


def reconcile_gauges(runs: dict[tuple[str, str], JobRun]) -> Iterable[Metric]:
    """reconcile's latest finished run on the task engine; absent before the first one."""
    finished = runs.get(("finished", RECONCILE))
    if finished is None:
        return []
    return [
        GaugeMetricFamily(
            "iaas_reconcile_last_result",
            "1 if the latest finished run of the reconcile job found every invariant holding, 0 if "
            "not. Only runs on the task engine (a JobRun) count: reconcile run from cron records none.",
            value=1 if finished.status == JobRun.Status.SUCCEEDED else 0,
        ),
        GaugeMetricFamily(
            "iaas_reconcile_last_run_timestamp_seconds",
            "When the latest finished run of the reconcile job on the task engine finished (unix time).",
            value=_unix_time(finished.finished_at),
        ),
    ]


def _unix_time(moment: dt.datetime | None) -> float:
    return moment.timestamp() if moment else 0
