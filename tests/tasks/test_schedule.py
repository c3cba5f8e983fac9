"""The schedule in code: every job runs (its command takes the arguments the job gives
it), and Celery beat, a real process, starts the jobs on the workers."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from django.core.management import get_commands
from django.utils import timezone

from iaas.operations import jobs
from iaas.operations.models import JobRun
from iaas.operations.schedule import JOBS, beat_schedule

from .conftest import ROOT, engine_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_beat_starts_every_job_through_the_start_task():
    schedule = beat_schedule()
    assert set(schedule) == set(JOBS)
    assert {entry["task"] for entry in schedule.values()} == {jobs.START_TASK}
    assert all(JOBS[name].command in get_commands() for name in schedule)


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_runs_its_command_with_the_arguments_it_gives(name, catalog, settings):
    settings.IAAS_RELAY_EVENTS = True  # the relay's job refuses to run where nothing is relayed
    run = jobs.run_inline(job_name=name, started_by="test")
    parts = list(run.part_set.values_list("status", "error"))
    assert run.status == JobRun.Status.SUCCEEDED, parts
    assert len(parts) == run.parts


def test_celery_beat_starts_the_jobs_that_are_due_and_the_workers_run_them(start_worker, tmp_path):
    start_worker("worker")
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "iaas", "beat", "-l", "INFO", "-s", str(tmp_path / "beat")],
        cwd=ROOT,
        env=engine_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # The jobs that repeat every few seconds come due first.
        by_beat = JobRun.objects.filter(started_by="beat", status=JobRun.Status.SUCCEEDED)
        wait_until(lambda: by_beat.filter(job="deliver").exists(), timeout=45, what="beat's first run")
        # The relay's starts came too, and did nothing: the relay is off in these settings.
        assert not JobRun.objects.filter(job="relay").exists()
    finally:
        beat.kill()
        beat.wait()


def test_a_start_of_a_repeating_job_soon_after_its_last_run_does_nothing():
    assert not jobs.start_is_redundant("deliver")
    jobs.run_inline(job_name="deliver", started_by="test")
    assert jobs.start_is_redundant("deliver")  # the starts queued during an outage: one run
    assert not jobs.start_is_redundant("meter")  # a scheduled job runs at every start


def test_a_start_delivered_again_publishes_its_run_and_a_stale_open_run_holds_nothing_back():
    run = jobs.run_create(job_name="deliver", started_by="beat", key="start-1")  # then the worker died
    assert not jobs.start_is_redundant("deliver", key="start-1")  # its redelivery dispatches the run
    assert jobs.start_is_redundant("deliver", key="start-2")  # another start, a moment later: no
    JobRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - dt.timedelta(minutes=11))
    assert not jobs.start_is_redundant("deliver", key="start-3")  # still open, but stale
