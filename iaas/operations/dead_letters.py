"""Dead-lettered task messages, for operators: ``drain`` copies what the broker put in the
dead-letter queue into the DeadLetter table (commit, then acknowledge: a drain killed in
between copies the message again onto the same row), ``retry`` publishes a message again,
as it was, to the exchange and routing key it came from, and ``discard`` closes it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import broker, jobs, locks
from .models import DeadLetter

logger = logging.getLogger(__name__)

# Headers the broker adds when it dead-letters a message: a retried message starts clean.
BROKER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
)
# Message properties kept for the retry (the body's encoding and type are fields).
KEPT_PROPERTIES = ("correlation_id", "reply_to", "priority", "delivery_mode")


@dataclass(frozen=True)
class Death:
    """Why and where the broker dead-lettered a message (its ``x-death`` header)."""

    reason: str
    queue: str
    exchange: str
    routing_key: str
    count: int
    at: dt.datetime | None

    @classmethod
    def of(cls, headers: dict) -> Death:
        deaths = headers.get("x-death") or [{}]
        latest = deaths[0]
        keys = latest.get("routing-keys") or [""]
        at = latest.get("time")
        return cls(
            reason=str(latest.get("reason") or headers.get("x-last-death-reason") or "unknown"),
            queue=str(latest.get("queue") or headers.get("x-last-death-queue") or ""),
            exchange=str(latest.get("exchange") or ""),
            routing_key=str(keys[0]),
            # Celery's delayed retries pass through queues that dead-letter them on expiry:
            # those are not deaths of the task.
            count=sum(
                int(death.get("count", 1))
                for death in deaths
                if not str(death.get("queue", "")).startswith("celery_delayed")
            ),
            at=_aware(at) if isinstance(at, dt.datetime) else None,
        )


def _aware(moment: dt.datetime) -> dt.datetime:
    """The broker's timestamps are UTC without a zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _json_safe(value):
    """Header values as JSON (the broker's timestamps and byte strings included)."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def drain(*, limit: int = 1000) -> int:
    """Copy up to ``limit`` messages from the dead-letter queue into the table; how many."""
    layout = broker.topology()
    copied = 0
    with broker.app().connection_for_write() as connection:
        broker.declare_topology(connection)
        queue = layout.dead_letter_queue_declaration()(connection.default_channel)
        while copied < limit:
            message = queue.get(no_ack=False, accept=["application/json"])
            if message is None:
                break
            try:
                _store(message)
            except Exception:
                # Left in the queue (not acknowledged) for the next drain; the rest are
                # not held back by it: a later drain starts where it stands.
                logger.exception("could not store a dead letter; it stays in %s", layout.dead_letter_queue)
                message.requeue()
                break
            message.ack()
            copied += 1
    return copied


def _store(message) -> DeadLetter:
    headers = dict(message.headers or {})
    death = Death.of(headers)
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    properties = message.properties or {}
    values = {
        "task": str(headers.get("task") or "")[:255],
        "queue": death.queue[:255],
        "exchange": death.exchange[:255],
        "routing_key": death.routing_key[:255],
        "reason": death.reason[:40],
        "deaths": max(death.count, 1),
        "headers": _json_safe(headers),
        "body": body.decode("utf-8", "replace"),
        "content_type": message.content_type or "application/json",
        "content_encoding": message.content_encoding or "utf-8",
        "properties": _json_safe({key: properties[key] for key in KEPT_PROPERTIES if key in properties}),
        "dead_at": death.at or timezone.now(),
        "status": DeadLetter.Status.DEAD,
        "handled_at": None,
        "handled_by": None,
    }
    message_id = str(
        headers.get("id") or properties.get("correlation_id") or f"sha256:{hashlib.sha256(body).hexdigest()}"
    )
    with transaction.atomic():
        letter, _ = DeadLetter.objects.update_or_create(message_id=message_id[:255], defaults=values)
        if letter.task == jobs.PART_TASK:
            part = arguments(letter)
            if isinstance(part.get("run_id"), int) and isinstance(part.get("index"), int):
                jobs.part_dead_lettered(run_id=part["run_id"], index=part["index"], reason=letter.reason)
    return letter


# A retry's publish gives up after this (the operator is waiting on the page).
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.5, "interval_step": 1, "interval_max": 2}
CONFIRM_TIMEOUT = 5.0


def retry(letter_ids, *, operator_id: int | None) -> int:
    """Publish these dead letters again to where they came from (each confirmed by the
    broker before its row says so); how many. Only dead ones: a second click finds them
    retried. The row (a dead letter's, never a money row) stays locked while its message
    is published, so two operators cannot both send it; the publish is bounded (a few
    seconds), and one that fails raises with the letters before it retried and it and
    those after it still dead."""
    retried = 0
    with broker.app().connection_for_write() as connection:
        producer = connection.Producer()
        for letter_id in letter_ids:
            with transaction.atomic():
                letter = locks.dead_letter_lock_if_dead(letter_id)
                if letter is None:
                    continue
                _republish(producer, letter)
                DeadLetter.objects.filter(pk=letter.pk).update(
                    status=DeadLetter.Status.RETRIED,
                    handled_at=timezone.now(),
                    handled_by_id=operator_id,
                    times_retried=F("times_retried") + 1,
                )
                retried += 1
    return retried


def _republish(producer, letter: DeadLetter) -> None:
    headers = {key: value for key, value in letter.headers.items() if key not in BROKER_HEADERS}
    producer.publish(
        letter.body.encode("utf-8"),
        exchange=letter.exchange,
        routing_key=letter.routing_key,
        headers=headers,
        content_type=letter.content_type,
        content_encoding=letter.content_encoding,
        retry=True,
        retry_policy=RETRY_POLICY,
        confirm_timeout=CONFIRM_TIMEOUT,
        **{key: value for key, value in letter.properties.items() if key in KEPT_PROPERTIES},
    )


def discard(letter_ids, *, operator_id: int | None) -> int:
    """Close these dead letters without running them again (an operator decided)."""
    return DeadLetter.objects.filter(pk__in=list(letter_ids), status=DeadLetter.Status.DEAD).update(
        status=DeadLetter.Status.DISCARDED, handled_at=timezone.now(), handled_by_id=operator_id
    )


def _call(letter: DeadLetter) -> tuple[list, dict] | None:
    """The task's positional and keyword arguments (Celery's message body), or None."""
    try:
        args, kwargs, _ = json.loads(letter.body)
    except (ValueError, TypeError):
        return None
    return (args, kwargs) if isinstance(args, list) and isinstance(kwargs, dict) else None


def arguments(letter: DeadLetter) -> dict:
    """The task's keyword arguments (a job part's ``run_id`` and ``index``)."""
    call = _call(letter)
    return call[1] if call else {}


def summary(letter: DeadLetter) -> str:
    """The task's arguments as an operator reads them."""
    call = _call(letter)
    if call is None:
        return letter.body[:500]
    args, kwargs = call
    shown = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{letter.task}({', '.join(shown)})"
