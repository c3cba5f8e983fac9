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
from iaas.contracts import bus

from . import broker, locks
from .models import JobPart, JobRun
from .schedule import job

logger = logging.getLogger(__name__)

PART_TASK = "iaas.jobs.part"
START_TASK = "iaas.jobs.start"
FINISHED = (JobPart.Status.SUCCEEDED, JobPart.Status.PROBLEMS)
OPEN = (JobPart.Status.QUEUED, JobPart.Status.RUNNING, JobPart.Status.RETRYING)


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
    """Publish a task for each part still queued (each confirmed by the broker); how
    many were published. A part published twice runs once more, harmlessly."""
    pending = list(
        run.part_set.filter(status=JobPart.Status.QUEUED).order_by("index").values_list("index", flat=True)
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


# A run of a repeating job still open after this long no longer holds back its starts (its
# parts wait for redispatch or an operator; the work goes on meanwhile).
OPEN_RUN_HOLDS_STARTS_FOR = dt.timedelta(minutes=10)


def start_is_redundant(job_name: str, *, key: str | None = None) -> bool:
    """A start of a job that repeats every few seconds is redundant when another run of
    it is open (begun in the last ten minutes) or began less than a period ago: the
    starts beat queued while the workers were busy or down run as one, not as a burst
    (they carry no expiry: an expired message would go to the dead-letter queue). A
    start delivered again whose run exists (``key``) is never redundant: it publishes
    what its first delivery could not."""
    spec = job(job_name)
    if spec.period is None:
        return False
    if key is not None and JobRun.objects.filter(start_key=key).exists():
        return False
    if spec.name == "relay" and not bus.relayed():
        return True  # nothing subscribes outside the money transaction: nothing to relay
    now = timezone.now()
    return (
        JobRun.objects.filter(job=spec.name, started_at__gte=now - OPEN_RUN_HOLDS_STARTS_FOR)
        .filter(Q(status=JobRun.Status.RUNNING) | Q(started_at__gte=now - spec.period))
        .exists()
    )


def runs_redispatch(*, older_than: dt.timedelta) -> int:
    """Publish again the parts still queued of runs started longer ago than
    ``older_than``: whatever stopped their first publish (the publisher crashed between
    creating the run and publishing, the broker was down), they are not forgotten. A part
    published twice runs once more, harmlessly. How many were published."""
    stale = JobRun.objects.filter(
        status=JobRun.Status.RUNNING,
        started_at__lt=timezone.now() - older_than,
        part_set__status=JobPart.Status.QUEUED,
    ).distinct()
    return sum(run_dispatch(run) for run in stale)


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
    """Record the outcome of this delivery of the part (the attempt ``part`` claimed) and,
    when it was the last part, the run's. A delivery claimed after this one (a duplicate
    running alongside, a redelivery) writes its own outcome instead, and a success is
    never overwritten."""
    with transaction.atomic():
        run = locks.job_run_lock(part.run_id)
        JobPart.objects.filter(pk=part.pk, attempts=part.attempts).exclude(
            status=JobPart.Status.SUCCEEDED
        ).update(status=status, summary=summary, error=error, finished_at=timezone.now())
        return _run_settle(run)


def part_failed(part: JobPart, error: Exception, *, final: bool) -> JobRun:
    """A part raised: it waits for its retry (its run stays open), or, with ``final``
    (no retry left: the task goes to the dead-letter queue), it failed."""
    status = JobPart.Status.FAILED if final else JobPart.Status.RETRYING
    return part_finish(part, status=status, summary=None, error=repr(error)[:4000])


def _run_settle(run: JobRun) -> JobRun:
    """The run's status from its parts' (under the run's row lock): over when no part is
    queued, running or waiting for its retry; failed when any part failed or found
    problems."""
    counts = run.part_set.aggregate(
        open=Count("pk", filter=Q(status__in=OPEN)),
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
    logs (what alerting watches) and a gauge in /metrics."""
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


def run_part(*, run_id: int, index: int, worker: str, final: bool = True) -> JobPart | None:
    """A worker's whole part: claim, run, record. Raises what the command raised (after
    recording it: ``final`` when the task will not be retried) so the task engine
    retries it. A process stopped mid-part (SystemExit, the time limit, a lost broker)
    records nothing: the part stays running and its message is delivered again."""
    part = part_claim(run_id=run_id, index=index, worker=worker)
    if part is None:
        return None
    try:
        status, summary, error = part_execute(part)
    except Exception as failure:
        part_failed(part, failure, final=final)
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
