"""Row locks of the operations tables, one helper per aggregate (as each context's
locks.py): a job run while its parts' outcomes add up, a part while a worker claims it,
a dead letter while its message is published again."""

from __future__ import annotations

from .models import DeadLetter, JobPart, JobRun


def job_run_lock(run_id: int) -> JobRun:
    return JobRun.objects.select_for_update(no_key=True).get(pk=run_id)


def job_part_lock(run_id: int, index: int) -> JobPart:
    return (
        JobPart.objects.select_for_update(no_key=True).select_related("run").get(run_id=run_id, index=index)
    )


def dead_letter_lock_if_dead(letter_id: int) -> DeadLetter | None:
    """The dead letter, locked, while it still waits for an operator; None once handled."""
    return (
        DeadLetter.objects.select_for_update(no_key=True)
        .filter(pk=letter_id, status=DeadLetter.Status.DEAD)
        .first()
    )
