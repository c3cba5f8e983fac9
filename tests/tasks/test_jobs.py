"""Scheduled jobs on real Celery workers and the real RabbitMQ: a run fans out one task per
wallet partition, routed by the partition to a fixed set of queues, so workers on
different queues share it; a worker SIGKILLed inside a batch leaves its task to be
redelivered and the work applied once; a task that fails is retried, then dead-lettered,
shown to operators and retried by one; a task that kills its worker every time is
dead-lettered after the queue's delivery limit."""

from __future__ import annotations

import datetime as dt
import os
import signal

import pytest
import time_machine
from django.conf import settings

from iaas.cloud import services as cloud
from iaas.cloud.models import Server
from iaas.contracts import bus
from iaas.operations import broker, dead_letters, jobs
from iaas.operations.models import DeadLetter, JobPart, JobRun
from iaas.operations.roles import FINANCE
from iaas.spending.batch import partition_of
from tests.admin.conftest import OperatorClient, enrol_authenticator, login_with_second_factor, make_operator
from tests.batch_runs import at
from tests.factories import funded_wallet

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

H = dt.timedelta(hours=1)
HALF = dt.timedelta(minutes=30)
T0 = at(2026, 5, 10)
PLAN = "s-2vcpu-4gb"


def buy_servers(wallets: int = 6) -> list[Server]:
    with time_machine.travel(T0, tick=False):
        for _ in range(wallets):
            wallet = funded_wallet(amount=10_000)
            cloud.server_create(owner_id=wallet.owner_id, wallet_id=wallet.id, name="web", plan_id=PLAN)
        bus.deliver_pending()
    return list(Server.objects.all())


def metering_run(moment: dt.datetime) -> JobRun:
    run = jobs.run_create(job_name="meter", started_by="test", at=moment)
    jobs.run_dispatch(run)
    return run


def finished(run: JobRun) -> JobRun | None:
    run.refresh_from_db()
    return run if run.status != JobRun.Status.RUNNING else None


def queue_of_part(run: JobRun, index: int) -> str:
    return broker.topology().queue_for_partition(index, run.parts)


def test_a_run_fans_out_per_wallet_partition_and_workers_on_different_queues_share_it(
    catalog, start_worker, assert_invariants, finance_console
):
    servers = buy_servers()
    layout = broker.topology()
    first_queue, second_queue = (layout.partition_queue(i) for i in range(layout.partition_queues))
    start_worker("first", queues=[first_queue])
    run = metering_run(T0 + 3 * H + HALF)

    # The first worker takes only the parts its queue was given: partitions 0 and 1 of 4.
    mine = [i for i in range(run.parts) if queue_of_part(run, i) == first_queue]
    assert mine == [0, 1]
    wait_until(
        lambda: run.part_set.filter(index__in=mine, status=JobPart.Status.SUCCEEDED).count() == len(mine),
        what="the first queue's parts",
    )
    assert set(run.part_set.exclude(index__in=mine).values_list("status", flat=True)) == {
        JobPart.Status.QUEUED
    }

    start_worker("second", queues=[second_queue])
    assert wait_until(lambda: finished(run), what="the run").status == JobRun.Status.SUCCEEDED
    parts = list(run.part_set.order_by("index"))
    assert [part.worker.split("@")[0] for part in parts] == ["first", "first", "second", "second"]
    # Each wallet was metered by the part of its own partition, and by no other.
    for part in parts:
        wallets = {s.wallet_id for s in servers if partition_of(s.wallet_id, run.parts) == part.index}
        assert part.summary["contexts"]["cloud"]["services"] == len(wallets)
    for server in Server.objects.all():
        assert server.paid_until == T0 + 4 * H
    run.refresh_from_db()
    assert run.finished_at > run.started_at
    assert_invariants()
    # What an operator sees: the run, its parts and where each ran.
    page = finance_console.get(f"/admin/operations/jobrun/{run.pk}/change/").content.decode()
    assert "succeeded" in page
    assert "second@" in page


def test_a_worker_killed_inside_a_batch_leaves_its_task_to_another_and_the_hours_are_paid_once(
    catalog, start_worker, assert_invariants
):
    buy_servers()
    doomed = start_worker("doomed", IAAS_PAUSE_IN_METERING_BATCH="60")
    run = metering_run(T0 + 3 * H + HALF)
    doomed.wait_for("metering batch started")  # its writes made, its commit 60 s away
    doomed.kill()

    start_worker("survivor")
    assert wait_until(lambda: finished(run), what="the run").status == JobRun.Status.SUCCEEDED
    attempts = dict(run.part_set.values_list("index", "attempts"))
    assert max(attempts.values()) == 2, attempts  # the killed part was delivered again
    assert sorted(attempts.values()).count(2) == 1
    for server in Server.objects.all():
        assert server.paid_until == T0 + 4 * H  # four hours, paid once (I11 below)
    assert_invariants()


@pytest.fixture
def finance_console(operator_groups):
    """The admin, as a Finance operator who passed both factors."""
    operator = make_operator("fiona", group=FINANCE)
    enrol_authenticator(operator)
    return login_with_second_factor(OperatorClient(), operator)


def test_a_failing_task_is_retried_then_dead_lettered_and_an_operator_retries_it(
    start_worker, finance_console
):
    broken = start_worker("broken", IAAS_FAIL_IN_JOB_PART="1")
    run = jobs.run_start(job_name="release_idle", started_by="test")
    wait_until(lambda: run.part_set.get().attempts == 1 + settings.IAAS_TASK_MAX_RETRIES, what="the retries")
    letter = wait_until(
        lambda: dead_letters.drain() and DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).first(),
        what="the dead letter",
    )
    assert letter.task == jobs.PART_TASK
    assert letter.reason == "rejected"
    assert letter.queue == broker.topology().default_queue
    assert f"run_id={run.pk}" in dead_letters.summary(letter)
    assert finished(run).status == JobRun.Status.FAILED
    broken.stop()

    # What the operator sees, and does once the fix is deployed.
    page = finance_console.get("/admin/operations/deadletter/")
    assert page.status_code == 200
    assert f"run_id={run.pk}" in page.content.decode()
    start_worker("fixed")
    answer = finance_console.post(
        "/admin/operations/deadletter/",
        {"action": "retry_letters", "_selected_action": [letter.pk]},
        follow=True,
    )
    assert answer.status_code == 200
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.RETRIED
    assert letter.times_retried == 1
    assert wait_until(lambda: finished(run) and run.status == JobRun.Status.SUCCEEDED, what="the retry")
    assert run.part_set.get().attempts == 2 + settings.IAAS_TASK_MAX_RETRIES


def test_a_failing_part_is_retried_on_its_own_partitions_queue(start_worker):
    layout = broker.topology()
    partitions_only = [layout.partition_queue(i) for i in range(layout.partition_queues)]
    start_worker("partitions", queues=partitions_only, IAAS_FAIL_IN_JOB_PART="1")
    run = metering_run(T0)

    def all_dead() -> list[DeadLetter]:
        dead_letters.drain()
        letters = list(DeadLetter.objects.filter(status=DeadLetter.Status.DEAD))
        return letters if len(letters) == run.parts else []

    # Had a retry gone through the default queue, this worker (which does not consume it)
    # would never have seen it again, and it would never have died.
    for letter in wait_until(all_dead, what="every part retried, then dead-lettered"):
        index = dead_letters.arguments(letter)["index"]
        assert letter.queue == queue_of_part(run, index)
        assert letter.routing_key.endswith(queue_of_part(run, index))
    attempts = set(run.part_set.values_list("attempts", flat=True))
    assert attempts == {1 + settings.IAAS_TASK_MAX_RETRIES}
    assert finished(run).status == JobRun.Status.FAILED


def test_a_task_that_kills_its_worker_every_time_is_dead_lettered_after_the_delivery_limit(start_worker):
    worker = start_worker("victim", IAAS_PAUSE_IN_JOB_PART="60")
    run = jobs.run_start(job_name="release_idle", started_by="test")
    part = run.part_set.get()
    deliveries = 0

    def next_delivery_or_death() -> str | None:
        part.refresh_from_db()
        if part.status == JobPart.Status.RUNNING and part.attempts > deliveries:
            return "delivered"
        return "dead" if dead_letters.drain() else None

    while wait_until(next_delivery_or_death, what="the next delivery or the dead letter") == "delivered":
        deliveries = part.attempts
        os.kill(int(part.worker.rsplit(" ", 1)[1]), signal.SIGKILL)  # the pool process running it
        assert deliveries <= settings.IAAS_TASK_DELIVERY_LIMIT + 1
    letter = DeadLetter.objects.get(status=DeadLetter.Status.DEAD)
    assert letter.reason == "delivery_limit"
    assert deliveries == settings.IAAS_TASK_DELIVERY_LIMIT + 1  # the first delivery and its redeliveries
    assert worker.process.poll() is None  # the worker survived its pool processes
    # Drained, the dead letter ends its part, and the run: failed, for an operator.
    part.refresh_from_db()
    assert part.status == JobPart.Status.FAILED
    assert part.error == "dead-lettered (delivery_limit)"
    assert finished(run).status == JobRun.Status.FAILED
