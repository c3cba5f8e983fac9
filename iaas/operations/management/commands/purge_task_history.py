"""Delete what the task engine leaves behind once it is old: runs of scheduled jobs
(IAAS_JOB_HISTORY_DAYS; one day for the jobs that repeat every few seconds), consumers'
inbox records (as long as the outbox keeps delivered rows: a duplicate cannot come
later), and dead letters an operator handled (IAAS_JOB_HISTORY_DAYS). Dead letters still
waiting for an operator are never deleted."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models import QuerySet
from django.utils import timezone

from iaas.common.cli import dump_json
from iaas.contracts import bus
from iaas.operations.models import DeadLetter, JobRun
from iaas.operations.schedule import JOBS


class Command(BaseCommand):
    help = "Delete old job runs, inbox records and handled dead letters."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, as_json, **options):
        now = timezone.now()
        default = dt.timedelta(days=settings.IAAS_JOB_HISTORY_DAYS)
        runs = 0
        for job in JOBS.values():
            cutoff = now - (job.history or default)
            runs += (
                JobRun.objects.filter(job=job.name, started_at__lt=cutoff)
                .exclude(status=JobRun.Status.RUNNING)
                .delete()[1]
                .get("operations.JobRun", 0)
            )
        inbox = bus.inbox_purge(older_than=dt.timedelta(days=settings.IAAS_OUTBOX_RETENTION_DAYS))
        letters = (
            DeadLetter.objects.filter(handled_at__lt=now - default)
            .exclude(status=DeadLetter.Status.DEAD)
            .delete()[0]
        )
        summary = {"job_runs": runs, "inbox_records": inbox, "dead_letters": letters}
        self.stdout.write(
            dump_json(summary)
            if as_json
            else f"deleted {runs} job run(s), {inbox} inbox record(s), {letters} handled dead letter(s)"
        )


def _delete_in_batches(rows: QuerySet, size: int = 5000) -> int:
    """Delete the rows a batch at a time (short transactions, bounded locks); how many of
    the queryset's model were deleted (a run's parts go with it)."""
    label = rows.model._meta.label
    deleted = 0
    while ids := list(rows.order_by("pk").values_list("pk", flat=True)[:size]):
        deleted += rows.model.objects.filter(pk__in=ids).delete()[1].get(label, 0)
    return deleted
