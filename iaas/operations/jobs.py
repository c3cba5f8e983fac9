"""Runs of the scheduled jobs (iaas.operations.schedule) on the task engine: a run is
created with one part per wallet partition, each part is published to the queue its
partition routes to, and a worker runs the job's command on that partition. Every
step is safe to repeat: a start delivered twice makes one run (keyed by the start
task's id), a part delivered twice runs a command that is idempotent by its records,
and a part that already finished is not run again."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from iaas.common import faults, request_ids
from iaas.common.cli import EXIT_PROBLEMS, EXIT_REFUSED

from . import broker, locks
from .models import JobPart, JobRun
from .schedule import job

logger = logging.getLogger(__name__)

PART_TASK = "iaas.jobs.part"
START_TASK = "iaas.jobs.start"
FINISHED = (JobPart.Status.SUCCEEDED, JobPart.Status.PROBLEMS)


def run_create(
    *, job_name: str, started_by: str, at: dt.datetime | None = None, key: str | None = None
) -> JobRun:
    """The run and its parts, in one transaction; the run already made under ``key``
    when there is one."""
    spec = job(job_name)
    with transaction.atomic():
        if key is not None:
            existing = JobRun.objects.filter(start_key=key).first()
            if existing is not None:
                return existing
        run = JobRun.objects.create(
            job=spec.name,
            parts=settings.IAAS_TASK_PARTITIONS if spec.partitioned else 1,
            at=at or timezone.now(),
            started_by=started_by[:200],
            start_key=key,
            request_id=request_ids.current(),
        )
        JobPart.objects.bulk_create(JobPart(run=run, index=index) for index in range(run.parts))
    return run


def part_queue(run: JobRun, index: int) -> str:
    """The queue of a part: its wallet partition's, or the default queue."""
    layout = broker.topology()
    if job(run.job).partitioned:
        return layout.queue_for_partition(index, run.parts)
    return layout.default_queue


def part_task_id(run_id: int, index: int) -> str:
    return f"jobpart-{run_id}-{index}"


def run_dispatch(run: JobRun) -> int:
    """Publish a task for each part not yet finished (each confirmed by the broker);
    how many were published. A part published twice runs once more, harmlessly."""
    pending = list(
        run.part_set.exclude(status__in=FINISHED).order_by("index").values_list("index", flat=True)
    )
    for index in pending:
        broker.send(
            PART_TASK,
            queue=part_queue(run, index),
            kwargs={"run_id": run.pk, "index": index},
            task_id=part_task_id(run.pk, index),
        )
    return len(pending)


def run_start(*, job_name: str, started_by: str, key: str | None = None) -> JobRun:
    """Create a run and publish its parts (what beat's start task does)."""
    run = run_create(job_name=job_name, started_by=started_by, key=key)
    run_dispatch(run)
    return run


def part_claim(*, run_id: int, index: int, worker: str) -> JobPart | None:
    """Mark the part running (one more attempt), or None when it already finished."""
    with transaction.atomic():
        part = locks.job_part_lock(run_id, index)
        if part.status in FINISHED:
            return None
        part.status = JobPart.Status.RUNNING
        part.attempts += 1
        part.worker = worker[:200]
        part.started_at = timezone.now()
        part.error = ""
        part.save(update_fields=["status", "attempts", "worker", "started_at", "error"])
    return part


def part_execute(part: JobPart) -> tuple[JobPart.Status, dict | None, str]:
    """Run the part's command: its status, its JSON summary, and what it said went wrong.
    Exit status 1 (problems found: reconcile's violations, an item that failed) and a
    refusal (a precondition not met: invoicing before usage is closed) are outcomes, not
    failures: retrying would not change them. Anything raised is a failure."""
    spec = job(part.run.job)
    faults.fail_point("job_part")
    faults.pause_point("job_part")
    out, err = io.StringIO(), io.StringIO()
    status = JobPart.Status.SUCCEEDED
    problem = ""
    try:
        arguments = spec.arguments(partition=f"{part.index}/{part.run.parts}", at=part.run.at)
        call_command(spec.command, *arguments, stdout=out, stderr=err)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            status, problem = JobPart.Status.PROBLEMS, f"exit status {exit_.code}"
            if exit_.code != EXIT_PROBLEMS:
                raise RuntimeError(f"{spec.command} exited with status {exit_.code}") from None
    except CommandError as error:
        if error.returncode != EXIT_REFUSED:
            raise
        status, problem = JobPart.Status.PROBLEMS, f"refused: {error}"
    return status, _summary(out.getvalue()), "\n".join(filter(None, [problem, err.getvalue().strip()]))[:4000]


def _summary(output: str) -> dict | None:
    output = output.strip()
    if not output:
        return None
    try:
        return json.loads(output)
    except ValueError:
        return {"output": output[:4000]}


def part_finish(part: JobPart, *, status: JobPart.Status, summary: dict | None, error: str) -> JobRun:
    """Record the part's outcome and, when it was the last, the run's."""
    with transaction.atomic():
        run = locks.job_run_lock(part.run_id)
        JobPart.objects.filter(pk=part.pk).update(
            status=status, summary=summary, error=error, finished_at=timezone.now()
        )
        return _run_settle(run)


def part_failed(part: JobPart, error: BaseException) -> JobRun:
    """A part raised: record it (the task is retried, then dead-lettered)."""
    return part_finish(part, status=JobPart.Status.FAILED, summary=None, error=repr(error)[:4000])


def _run_settle(run: JobRun) -> JobRun:
    """The run's status from its parts' (under the run's row lock): over when no part is
    queued or running; failed when any part failed or found problems."""
    counts = run.part_set.aggregate(
        open=Count("pk", filter=Q(status__in=[JobPart.Status.QUEUED, JobPart.Status.RUNNING])),
        bad=Count("pk", filter=Q(status__in=[JobPart.Status.FAILED, JobPart.Status.PROBLEMS])),
    )
    if counts["open"]:
        if run.status != JobRun.Status.RUNNING:
            run.status, run.finished_at = JobRun.Status.RUNNING, None
            run.save(update_fields=["status", "finished_at"])
        return run
    status = JobRun.Status.FAILED if counts["bad"] else JobRun.Status.SUCCEEDED
    first_time = run.status == JobRun.Status.RUNNING
    run.status, run.finished_at = status, timezone.now()
    run.save(update_fields=["status", "finished_at"])
    if first_time and status == JobRun.Status.FAILED:
        transaction.on_commit(lambda: _alert(run))
    return run


def _alert(run: JobRun) -> None:
    """A run that failed, or found problems where a person must act, is an error in the
    logs (what alerting watches) and a gauge in
    /metrics."""
    failed = list(
        run.part_set.filter(status__in=[JobPart.Status.FAILED, JobPart.Status.PROBLEMS]).values_list(
            "index", "status", "error"
        )
    )
    raised = any(status == JobPart.Status.FAILED for _, status, _ in failed)
    level = logging.ERROR if raised or job(run.job).alert_on_problems else logging.WARNING
    logger.log(
        level,
        "job %s (run %s at %s) finished with problems in %d of %d part(s): %s",
        run.job,
        run.pk,
        run.at.isoformat(),
        len(failed),
        run.parts,
        "; ".join(f"part {index}: {error}" for index, _, error in failed)[:2000],
    )


def part_dead_lettered(*, run_id: int, index: int, reason: str) -> None:
    """The broker gave up on a part's task (its dead letter was drained): the part failed,
    and its run is over if it was the last (failed: an operator retries the dead letter,
    which runs the part again and settles the run anew)."""
    part = JobPart.objects.filter(run_id=run_id, index=index).exclude(status__in=FINISHED).first()
    if part is not None:
        part_finish(part, status=JobPart.Status.FAILED, summary=None, error=f"dead-lettered ({reason})")


def run_part(*, run_id: int, index: int, worker: str) -> JobPart | None:
    """A worker's whole part: claim, run, record. Raises what the command raised (after
    recording it) so the task engine retries it."""
    part = part_claim(run_id=run_id, index=index, worker=worker)
    if part is None:
        return None
    try:
        status, summary, error = part_execute(part)
    except BaseException as failure:
        part_failed(part, failure)
        raise
    part_finish(part, status=status, summary=summary, error=error)
    return part


def run_inline(*, job_name: str, started_by: str) -> JobRun:
    """Run every part here, one after the other (``run_job --here``, and where no broker
    is configured): the same records as on the task engine."""
    run = run_create(job_name=job_name, started_by=started_by)
    for index in range(run.parts):
        run_part(run_id=run.pk, index=index, worker="inline")
    run.refresh_from_db()
    return run
