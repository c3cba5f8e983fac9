"""The request id across the task engine: a task published while a request (or another
task) is current carries its id in the message's headers, and the worker makes that id
current while the task runs, so the task's log lines name the request that caused it.
A task published with no id current (Celery beat's starts) runs under its own task id.

``connect(app)`` wires it, from the Celery app's module. It also keeps a worker's
logging the project's LOGGING (JSON in production, every line with its request id):
without a ``setup_logging`` receiver, Celery gives the task loggers a handler and a
format of its own and stops them propagating to the project's handlers."""

from __future__ import annotations

from contextlib import AbstractContextManager

from celery import Celery, signals
from django.conf import settings
from django.utils.log import configure_logging

from . import request_ids

HEADER = "request_id"  # the message header's name

# The id bound for each task running in this process (by task id), unbound when it ends.
_bound: dict[str, AbstractContextManager] = {}


def connect(app: Celery) -> None:
    """Connect the receivers for ``app`` (once however often it is called: their dispatch
    ids). Celery's signals are process-wide: they serve every app in the process."""
    signals.before_task_publish.connect(put_request_id, weak=False, dispatch_uid="iaas.request_id.publish")
    signals.task_prerun.connect(bind_request_id, weak=False, dispatch_uid="iaas.request_id.prerun")
    signals.task_postrun.connect(unbind_request_id, weak=False, dispatch_uid="iaas.request_id.postrun")
    signals.setup_logging.connect(use_project_logging, weak=False, dispatch_uid="iaas.request_id.logging")


def put_request_id(sender=None, headers: dict | None = None, **kwargs) -> None:
    """before_task_publish: the current id into the message's headers (an id the message
    already carries, a dead letter's retried as it was, is kept)."""
    current = request_ids.current()
    if current and headers is not None and not headers.get(HEADER):
        headers[HEADER] = current


def bind_request_id(sender=None, task_id: str | None = None, task=None, **kwargs) -> None:
    """task_prerun: the message's id (when usable), else the id already current (a task
    applied in the process that calls it), else the task's own, made current."""
    carried = getattr(getattr(task, "request", None), HEADER, None)
    request_id = request_ids.accepted(carried) or request_ids.current() or task_id or request_ids.new()
    binding = request_ids.bound(request_id)
    binding.__enter__()
    _bound[task_id] = binding


def unbind_request_id(sender=None, task_id: str | None = None, **kwargs) -> None:
    """task_postrun: the id the task ran under is current no longer."""
    binding = _bound.pop(task_id, None)
    if binding is not None:
        binding.__exit__(None, None, None)


def use_project_logging(**kwargs) -> None:
    """setup_logging: the worker logs through the project's LOGGING, configured as
    Django configures it (Django's defaults, then LOGGING)."""
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
