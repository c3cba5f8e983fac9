"""A run's records on their own (no broker): the outcome of a part is its latest
delivery's, a success is never overwritten by a duplicate that failed, a part waiting
for its retry keeps its run open, and runs whose parts were never published are
published again."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from iaas.operations import jobs
from iaas.operations.models import JobPart, JobRun

pytestmark = pytest.mark.django_db


def claimed(run: JobRun, index: int = 0) -> JobPart:
    return jobs.part_claim(run_id=run.pk, index=index, worker="test")


def test_a_duplicate_delivery_does_not_overwrite_the_latest_ones_outcome():
    run = jobs.run_create(job_name="release_idle", started_by="test")
    first, second = claimed(run), claimed(run)  # two deliveries at once: attempts 1 and 2
    jobs.part_finish(second, status=JobPart.Status.SUCCEEDED, summary={"released": 1}, error="")
    jobs.part_failed(first, RuntimeError("the duplicate lost"), final=True)
    part = run.part_set.get()
    assert (part.status, part.attempts, part.summary) == (JobPart.Status.SUCCEEDED, 2, {"released": 1})
    run.refresh_from_db()
    assert run.status == JobRun.Status.SUCCEEDED


def test_a_part_waiting_for_its_retry_keeps_its_run_open_and_failing_on_the_last_try_ends_it():
    run = jobs.run_create(job_name="release_idle", started_by="test")
    jobs.part_failed(claimed(run), RuntimeError("database restarting"), final=False)
    run.refresh_from_db()
    assert run.status == JobRun.Status.RUNNING  # no alert for a retry to come
    assert run.part_set.get().status == JobPart.Status.RETRYING
    jobs.part_failed(claimed(run), RuntimeError("still down"), final=True)
    run.refresh_from_db()
    assert run.status == JobRun.Status.FAILED


def test_a_finished_part_is_not_run_again():
    run = jobs.run_create(job_name="release_idle", started_by="test")
    jobs.part_finish(claimed(run), status=JobPart.Status.SUCCEEDED, summary=None, error="")
    assert claimed(run) is None


def test_runs_whose_parts_stayed_queued_are_published_again(monkeypatch):
    published = []
    monkeypatch.setattr(jobs.broker, "send", lambda task, **kwargs: published.append(kwargs["kwargs"]))
    stale = jobs.run_create(job_name="meter", started_by="test")
    JobRun.objects.filter(pk=stale.pk).update(started_at=timezone.now() - dt.timedelta(hours=1))
    jobs.part_finish(claimed(stale, 0), status=JobPart.Status.SUCCEEDED, summary=None, error="")
    jobs.run_create(job_name="meter", started_by="test")  # just begun: its parts are on their way
    assert jobs.runs_redispatch(older_than=dt.timedelta(minutes=15)) == stale.parts - 1
    assert sorted(message["index"] for message in published) == list(range(1, stale.parts))
