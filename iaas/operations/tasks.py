"""The Celery tasks: a scheduled job's start (the fan-out), its parts, and the consumer
of events relayed from the outbox. Each is a thin wrapper over a service that is safe
to repeat; what the engine adds is the retry policy:

- anything a task raises is retried with exponential backoff (the broker's delayed
  delivery), up to IAAS_TASK_MAX_RETRIES times; then the message is rejected and
  goes to the dead-letter queue (``task_acks_on_failure_or_timeout`` is off);
- a worker that dies running a task (SIGKILL, the hard time limit, a lost host)
  never acknowledged it: the broker redelivers it, and the quorum queue's delivery
  limit sends a message that kills its worker every time to the dead-letter queue.
"""

from __future__ import annotations

import os

from celery import shared_task
from django.conf import settings

from iaas.contracts import bus

from . import broker, jobs
from .models import JobRun


def _backoff(retries: int) -> int:
    """Seconds before the next try: base, 2 x base, 4 x base, ... capped at ten minutes."""
    return min(settings.IAAS_TASK_RETRY_DELAY_SECONDS * 2**retries, 600)


def _retry(task, error: Exception, *, queue: str):
    """Retry ``task`` later on ``queue``, the queue it came from (Celery's retry on a
    quorum queue would otherwise go through the default queue: a partition's work would
    leave its partition's queue)."""
    return task.retry(
        exc=error,
        countdown=_backoff(task.request.retries),
        max_retries=settings.IAAS_TASK_MAX_RETRIES,
        queue=queue,
    )


def _last_try(task) -> bool:
    return task.request.retries >= settings.IAAS_TASK_MAX_RETRIES


@shared_task(name=jobs.START_TASK, bind=True)
def start_job(self, job: str, started_by: str = "beat") -> int | None:
    """Create the job's run (once per start message) and publish its parts; nothing for
    a job that repeats every few seconds when a run of it came a moment ago."""
    try:
        if jobs.start_is_redundant(job, key=self.request.id):
            return None
        return jobs.run_start(job_name=job, started_by=started_by, key=self.request.id).pk
    except LookupError:
        raise  # an unknown job: no retry makes it known; it fails and is dead-lettered
    except Exception as error:
        raise _retry(self, error, queue=broker.topology().default_queue) from error


@shared_task(name=jobs.PART_TASK, bind=True)
def run_job_part(self, run_id: int, index: int) -> None:
    """Run one part of a job's run (one wallet partition) on this worker."""
    worker = f"{self.request.hostname} pid {os.getpid()}"
    try:
        jobs.run_part(run_id=run_id, index=index, worker=worker, final=_last_try(self))
    except Exception as error:
        raise _retry(self, error, queue=jobs.part_queue(JobRun.objects.get(pk=run_id), index)) from error


@shared_task(name="iaas.events.consume", bind=True)
def consume_event(self, subscription: str, event_type: str, event_id: str, payload: dict) -> None:
    """Apply a relayed event once for ``subscription`` (its inbox record decides)."""
    try:
        bus.consume_relayed(subscription, event_type=event_type, event_id=event_id, payload=payload)
    except Exception as error:
        raise _retry(self, error, queue=broker.topology().events_queue) from error
