"""The Celery app (``celery -A iaas worker``, ``celery -A iaas beat``): configured from
Django's settings (the ``CELERY_`` ones, iaas/settings/base.py), its queues from
iaas.common.taskqueues, its schedule from iaas.operations.schedule, its tasks from
iaas.operations.tasks. Without CELERY_BROKER_URL nothing here is used: the same work
runs as management commands."""

from __future__ import annotations

import os

from celery import Celery, signals

from iaas.common import task_request_ids

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaas.settings.production")

app = Celery("iaas")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The request id travels with each task, and workers log through the project's LOGGING.
task_request_ids.connect(app)


@app.on_after_configure.connect
def _configure_topology(sender: Celery, **kwargs) -> None:
    from iaas.operations import broker
    from iaas.operations.schedule import beat_schedule

    layout = broker.topology()
    sender.conf.update(
        task_queues=layout.queues(),
        task_default_queue=layout.default_queue,
        task_default_exchange=layout.exchange.name,
        task_default_exchange_type=layout.exchange.type,
        task_default_routing_key=layout.default_queue,
        beat_schedule=beat_schedule(),
    )


app.autodiscover_tasks(["iaas.operations"])


@signals.worker_ready.connect
def _declare_dead_letter_queue(sender=None, **kwargs) -> None:
    """The dead-letter queue exists before the first message can die (a worker does
    not consume it, so it would not declare it)."""
    from iaas.operations import broker

    broker.declare_topology()
