"""The composition root's view of the broker: whether one is configured, the queue
layout every host declares, and publishing a task so that the broker confirmed it
(publisher confirms: ``CELERY_BROKER_TRANSPORT_OPTIONS``) or the caller knows it did not."""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache

from django.conf import settings
from kombu import Connection

from iaas.common import faults
from iaas.common.taskqueues import Topology


class NoBroker(RuntimeError):
    """CELERY_BROKER_URL is not set: the work runs as management commands instead."""


# The broker URLs this process has declared the layout on (publishers declare once).
_declared: set[str] = set()


def configured() -> bool:
    return bool(settings.CELERY_BROKER_URL)


@cache
def topology() -> Topology:
    return Topology(
        prefix=settings.IAAS_TASK_QUEUE_PREFIX,
        partition_queues=settings.IAAS_TASK_PARTITION_QUEUES,
        delivery_limit=settings.IAAS_TASK_DELIVERY_LIMIT,
    )


def app():
    from iaas.celery import app as celery_app

    if not configured():
        raise NoBroker("no CELERY_BROKER_URL: run the management command instead")
    return celery_app


def declare_topology(connection: Connection | None = None) -> None:
    """Declare the exchanges and queues (work queues and the dead-letter queue). Safe to
    repeat; every worker does it when it starts, and publishers before their first
    message, so a message is never published to a queue that does not exist yet."""
    layout = topology()
    with app().connection_for_write() if connection is None else nullcontext(connection) as conn:
        channel = conn.default_channel
        layout.dead_letter_queue_declaration()(channel).declare()
        for queue in layout.queues():
            queue(channel).declare()
    _declared.add(settings.CELERY_BROKER_URL)


def send(
    task: str,
    *,
    queue: str,
    kwargs: dict,
    task_id: str | None = None,
    expires: float | None = None,
    request_id: str | None = None,
):
    """Publish ``task`` to ``queue``; returns once the broker confirmed it (raises if it
    refused or could not be reached). ``request_id``: the request that caused it, when
    not the current one (a relayed event carries its publisher's). The cluster scenario
    "every message published twice" repeats it (iaas.common.faults)."""
    headers = {"request_id": request_id} if request_id else None
    celery_app = app()
    if settings.CELERY_BROKER_URL not in _declared:
        declare_topology()
    for _ in range(faults.repeat("publish")):
        celery_app.send_task(
            task, kwargs=kwargs, queue=queue, task_id=task_id, expires=expires, headers=headers
        )
