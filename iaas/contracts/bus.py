"""The in-process event bus with a transactional outbox.

``publish()`` writes one outbox row per subscribed handler in the caller's
transaction, so an event exists exactly when the change that caused it committed.
Delivery claims a row with ``SELECT ... FOR UPDATE SKIP LOCKED``, runs the handler in
a savepoint, and marks the row in the same transaction: a crash anywhere leaves the
row pending for ``deliver_events`` to finish. Handlers are idempotent (I5).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction
from django.db.models import BigIntegerField, F
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from . import statements
from .checks import Relation
from .events import Event, event_from_payload
from .models import InboxRecord, OutboxMessage

logger = logging.getLogger(__name__)

Handler = Callable[[Event], None]
# A batch handler applies many pending events (of one wallet or many) at once and returns
# the ids of those it deferred (their wallet busy elsewhere): they stay pending.
BatchHandler = Callable[[list[Event]], "set | None"]

# How long a deferred row waits before it is due again (its wallet was busy).
DEFER_DELAY = dt.timedelta(seconds=1)

_handlers: dict[str, dict[str, Handler]] = defaultdict(dict)  # event type -> name -> handler
_handlers_by_name: dict[str, Handler] = {}
_batch_handlers_by_name: dict[str, BatchHandler] = {}
_subscriptions: dict[str, tuple[str, Handler]] = {}  # name -> (event type, handler)
_conditions: dict[str, Callable[[Event], bool]] = {}  # name -> which events it takes
_relayed: set[str] = set()  # subscriptions outside the money transaction (relay=True)
# The id of the request (or task) publishing, stored with each outbox row; the composition
# root binds it (the contracts know no request).
_request_id: Callable[[], str] = str


def bind_request_ids(current: Callable[[], str]) -> None:
    """Where ``publish`` reads the current request's id (iaas.common.request_ids)."""
    global _request_id
    _request_id = current


# A subscription's name: "<context>.<what it does>", lower case, dotted. It is stored in
# every outbox row (OutboxMessage.handler, at most 200 characters).
SUBSCRIPTION_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


class PublishOutsideTransaction(RuntimeError):
    """publish() was called in autocommit mode: the event could outlive a rolled-back change."""


class DuplicateSubscription(ImproperlyConfigured):
    """Two subscriptions under one name: their outbox rows could not be told apart. Raised
    from an ``AppConfig.ready()``, it stops the app from starting."""


def subscribe(
    event_type: type[Event],
    handler: Handler,
    *,
    name: str,
    batch: BatchHandler | None = None,
    when: Callable[[Event], bool] | None = None,
    relay: bool = False,
) -> None:
    """Register a handler under a stable ``name`` (from a context's ``AppConfig.ready()``).

    Outbox rows store the name, not the function's import path: the function may move or
    be renamed, and rows written before still reach it. Change a name only with a data
    migration that renames the undelivered rows (contracts 0003 is the model). The same
    subscription registered again is a no-op; another one under a taken name is refused.

    ``batch``, when given, handles many of the handler's pending events at once, of one
    wallet or of many (a set-based settlement); the delivery worker uses it with
    ``--batch-size``. It must do exactly what calling ``handler`` on each would, except
    that it may defer events whose wallet another transaction holds (it returns their
    ids; they stay pending, due again a moment later, no attempt counted).

    ``when``, when given, says which events of the type the subscription takes (an event
    addressed to one context, such as ChargeSettled): ``publish`` writes no row for the
    others, so nobody delivers an event only for the handler to ignore it.

    ``relay=True``: a consumer outside the money transaction (customer notifications,
    anything on another host). Where a broker is configured (IAAS_RELAY_EVENTS), its
    rows are not run by the delivery worker but relayed to the broker (``relay_claim``,
    ``relay_done``) and applied by a task worker through ``consume_relayed``; either way
    it is applied once per event, under an inbox record written with its effect."""
    if len(name) > 200 or not SUBSCRIPTION_NAME.fullmatch(name):
        raise ValueError(f"a subscription name is dotted lower case, like 'billing.settle_charge': {name!r}")
    subscription = (event_type.type_name(), handler)
    taken = _subscriptions.get(name)
    if taken is not None and taken != subscription:
        raise DuplicateSubscription(
            f"subscription name {name!r} is taken by {taken[1]!r} for {taken[0]}; "
            f"{handler!r} for {subscription[0]} needs a name of its own"
        )
    _subscriptions[name] = subscription
    _handlers[event_type.type_name()][name] = handler
    _handlers_by_name[name] = handler
    if batch is not None:
        _batch_handlers_by_name[name] = batch
    if when is not None:
        _conditions[name] = when
    if relay:
        _relayed.add(name)


def relayed() -> bool:
    """Whether relayed subscriptions go through the broker (else delivered here)."""
    return bool(_relayed) and settings.IAAS_RELAY_EVENTS


def subscribers(event_type: type[Event]) -> list[str]:
    return sorted(_handlers[event_type.type_name()])


@dataclass(frozen=True)
class Subscription:
    """A registered subscription as an operator reads it (``manage.py events --list``)."""

    name: str
    context: str  # the subscribing context: the name's first part
    batch: bool  # it has a batch form (deliver_events --batch-size)
    conditional: bool  # it takes only some events of its type (subscribe(..., when=))
    relay: bool = False  # outside the money transaction: relayed through the broker


def subscriptions(event_type: type[Event]) -> list[Subscription]:
    return [
        Subscription(
            name,
            name.split(".")[0],
            name in _batch_handlers_by_name,
            name in _conditions,
            name in _relayed,
        )
        for name in subscribers(event_type)
    ]


class UnknownSubscription(ValueError):
    """No subscription is registered under that name."""


def feed(name: str, *, since: dt.datetime, chunk: int = 1000) -> int:
    """Give the subscription ``name`` the events of its type recorded in the outbox since
    ``since`` that it has no row for yet (a subscription added after they were published,
    or one that takes events again): one pending row each, for ``deliver_events``. Its
    ``when`` condition applies. Idempotent: a row it has already is kept as it is
    (``outbox_one_row_per_handler``). Returns the rows added. Events purged with the
    delivered history (IAAS_OUTBOX_RETENTION_DAYS) cannot be fed."""
    if name not in _subscriptions:
        raise UnknownSubscription(f"no subscription named {name!r}; see manage.py events --list")
    event_type, _ = _subscriptions[name]
    recorded = (
        OutboxMessage.objects.filter(event_type=event_type, created_at__gte=since)
        .exclude(event_id__in=OutboxMessage.objects.filter(handler=name).values("event_id"))
        .order_by("id")
        .values_list("event_id", "payload")
    )
    rows_for_it = OutboxMessage.objects.filter(handler=name)
    before = rows_for_it.count()
    now = timezone.now()
    seen: set = set()
    batch: list[OutboxMessage] = []
    for event_id, payload in recorded.iterator(chunk_size=chunk):
        if event_id in seen:
            continue
        seen.add(event_id)
        event = event_from_payload(event_type, payload)
        if name in _conditions and not _conditions[name](event):
            continue
        row = _row(event, name)
        row.created_at = row.available_at = now  # a new row: due now, not stuck since then
        batch.append(row)
        if len(batch) >= chunk:
            OutboxMessage.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    if batch:
        OutboxMessage.objects.bulk_create(batch, ignore_conflicts=True)
    return rows_for_it.count() - before


# The handler of the row that records an event no subscription takes: the event is in
# the outbox all the same (the wallet's history lists it, a later subscriber can be fed
# from it), delivered to nobody.
NO_SUBSCRIBER = ""


def publish(*events: Event, together: Sequence[statements.Write] = ()) -> list[OutboxMessage]:
    """Write the events to the outbox in the current transaction: one row per subscribed
    handler, or one row delivered to nobody (``NO_SUBSCRIBER``) when no subscription
    takes the event, so every published event is recorded once at least.

    ``together``: the writes that make the events true (a charge, a reservation), run
    before the outbox rows in the same statement where the database allows it
    (``iaas.contracts.statements``): the change and its event in one round trip."""
    if not connection.in_atomic_block:
        raise PublishOutsideTransaction("publish() must run inside transaction.atomic()")
    rows = []
    for event in events:
        names = [
            name
            for name in _handlers[event.type_name()]
            if name not in _conditions or _conditions[name](event)
        ]
        rows += [_row(event, name) for name in names] or [_recorded_only(event)]
    if not rows:
        statements.run_together(*together)
        return []
    created = _insert_together(rows, together) if together else _insert(rows)
    if settings.IAAS_DELIVER_ON_COMMIT:
        ids = [row.pk for row in created if row.status == OutboxMessage.Status.PENDING]
        if ids:
            transaction.on_commit(partial(deliver_messages, ids), robust=True)
    return created


def _row(event: Event, handler: str) -> OutboxMessage:
    return OutboxMessage(
        event_id=event.event_id,
        event_type=event.type_name(),
        handler=handler,
        payload=event.to_payload(),
        wallet_id=getattr(event, "wallet_id", None),
        created_at=event.occurred_at,
        available_at=event.occurred_at,
        request_id=_request_id(),
    )


def _recorded_only(event: Event) -> OutboxMessage:
    row = _row(event, NO_SUBSCRIBER)
    row.status, row.delivered_at = OutboxMessage.Status.DONE, event.occurred_at
    return row


def _insert_together(rows: list[OutboxMessage], together: Sequence[statements.Write]) -> list[OutboxMessage]:
    """The outbox rows written last in one statement with ``together``, their ids read
    back (delivery on commit needs them)."""
    ids = statements.run_together(*together, statements.insert(*rows, returning=("id",)))
    for row, (pk,) in zip(rows, ids, strict=True):
        row.pk = row.id = pk
        statements.saved(row)
    return rows


def _insert(rows: list[OutboxMessage]) -> list[OutboxMessage]:
    """Write the rows. A batch run's thousands go in one ``INSERT ... SELECT FROM unnest``
    on PostgreSQL (one array per column, bound on the server and sent in binary, the
    payloads as JSON text): ``bulk_create`` sends a placeholder per value, and building
    that query costs more than running it."""
    if len(rows) == 1 or connection.vendor != "postgresql":
        return OutboxMessage.objects.bulk_create(rows)
    table = connection.ops.quote_name(OutboxMessage._meta.db_table)
    encoder = OutboxMessage._meta.get_field("payload").encoder
    with _server_bound_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (event_id, event_type, handler, payload, wallet_id, created_at, "  # noqa: S608
            f"available_at, status, delivered_at, attempts, last_error, request_id) "
            f"SELECT e, t, h, p::jsonb, w, c, a, s, d, 0, '', %s::text FROM unnest(%b::uuid[], %b::text[], "
            f"%b::text[], %b::text[], %b::uuid[], %b::timestamptz[], %b::timestamptz[], %b::text[], "
            f"%b::timestamptz[]) AS r(e, t, h, p, w, c, a, s, d) RETURNING id",
            [
                rows[0].request_id,  # one publish, one request
                [row.event_id for row in rows],
                [row.event_type for row in rows],
                [row.handler for row in rows],
                [json.dumps(row.payload, cls=encoder) for row in rows],
                [row.wallet_id for row in rows],
                [row.created_at for row in rows],
                [row.available_at for row in rows],
                [row.status for row in rows],
                [row.delivered_at for row in rows],
            ],
        )
        for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
            row.pk = row.id = pk
    return rows


def _server_bound_cursor():
    """A cursor binding on the server, wrapped as ``connection.cursor()`` is (so query
    logging sees it): the arrays go in binary (as ``iaas.common.sql``, which the
    contracts do not import)."""
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


# --- Delivery --------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    deferred: int = 0  # applied later: their wallet was busy (batch handlers only)

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(
            self.delivered + other.delivered, self.failed + other.failed, self.deferred + other.deferred
        )


def retry_delay(attempts: int) -> dt.timedelta:
    """Exponential backoff, 2 s, 4 s, ... capped at five minutes."""
    return dt.timedelta(seconds=min(2**attempts, 300))


def _pending_due():
    """Due pending rows this process delivers (not those the relay hands to the broker)."""
    rows = OutboxMessage.objects.select_for_update(skip_locked=True).filter(
        status=OutboxMessage.Status.PENDING, available_at__lte=timezone.now()
    )
    return rows.exclude(handler__in=sorted(_relayed)) if relayed() else rows


def _apply(name: str, handler: Handler, event: Event) -> None:
    """Run the handler, in the caller's transaction; a relayed subscription's only when
    its inbox has no record of the event yet (the record is written with the effect)."""
    if name in _relayed and not _inbox_record(name, event.event_id):
        return
    handler(event)


def _inbox_record(consumer: str, event_id) -> bool:
    """Insert the consumer's inbox record for the event: True, or False when it exists
    (the event was applied already). ON CONFLICT DO NOTHING: a concurrent duplicate
    waits for the first transaction and then finds the record."""
    fields = InboxRecord._meta
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(fields.db_table)} (consumer, event_id, received_at) "  # noqa: S608
            f"VALUES (%s, %s, %s) ON CONFLICT (consumer, event_id) DO NOTHING",
            [
                consumer,
                statements.prepared(fields.get_field("event_id"), event_id),
                statements.prepared(fields.get_field("received_at"), timezone.now()),
            ],
        )
        return cursor.rowcount == 1


def _run(message: OutboxMessage) -> bool:
    """Run the row's handler in a savepoint and record the outcome on the row."""
    handler = _handlers_by_name.get(message.handler)
    message.attempts += 1
    try:
        if handler is None:
            raise LookupError(f"no handler registered under {message.handler!r}")
        event = event_from_payload(message.event_type, message.payload)
        with transaction.atomic():
            _apply(message.handler, handler, event)
    except Exception as error:
        logger.warning("delivery of outbox row %s failed: %r", message.pk, error)
        message.last_error = "".join(traceback.format_exception_only(error)).strip()[:4000]
        if message.attempts >= settings.IAAS_OUTBOX_MAX_ATTEMPTS:
            message.status = OutboxMessage.Status.FAILED
        message.available_at = timezone.now() + retry_delay(message.attempts)
        message.save(update_fields=["attempts", "last_error", "status", "available_at"])
        return False
    message.status = OutboxMessage.Status.DONE
    message.delivered_at = timezone.now()
    message.save(update_fields=["attempts", "status", "delivered_at"])
    return True


def deliver_message(message_id: int) -> bool | None:
    """Deliver one row if it is pending, due and not being delivered elsewhere.
    Returns True (delivered), False (handler failed) or None (nothing to do)."""
    with transaction.atomic():
        message = _pending_due().filter(pk=message_id).first()
        if message is None:
            return None
        return _run(message)


def deliver_messages(message_ids: Iterable[int]) -> DeliveryReport:
    """Deliver these rows (what one transaction published, right after its commit): the
    rows of handlers with a batch form in one transaction per handler (a batch run's
    thousand settlements are one set-based booking), the others one by one."""
    message_ids = list(message_ids)
    report = DeliveryReport()
    if len(message_ids) > 1 and _batch_handlers_by_name:
        message_ids, report = _deliver_batchable(message_ids)
    for message_id in message_ids:
        try:
            outcome = deliver_message(message_id)
        except Exception:  # the database itself failed: deliver_events will retry
            logger.exception("could not deliver outbox row %s", message_id)
            continue
        if outcome is True:
            report.delivered += 1
        elif outcome is False:
            report.failed += 1
    return report


def _deliver_batchable(message_ids: list[int]) -> tuple[list[int], DeliveryReport]:
    """Deliver the rows among ``message_ids`` whose handler has a batch form, a handler
    at a time; return the other ids (and what was delivered)."""
    report = DeliveryReport()
    handlers = dict(
        OutboxMessage.objects.filter(
            pk__in=message_ids, handler__in=list(_batch_handlers_by_name)
        ).values_list("pk", "handler")
    )
    for handler in sorted(set(handlers.values())):
        try:
            with transaction.atomic():
                claimed = list(
                    _pending_due()
                    .filter(pk__in=[pk for pk, h in handlers.items() if h == handler])
                    .order_by("wallet_id", "id")
                )
                if claimed:
                    report = report + _run_batch(claimed)
        except Exception:  # the database itself failed: deliver_events will retry
            logger.exception("could not deliver a batch of %s rows", handler)
    return [pk for pk in message_ids if pk not in handlers], report


def _run_batch(messages: list[OutboxMessage]) -> DeliveryReport:
    """Run a batch handler over the claimed rows in one savepoint; if it fails, fall
    back to the rows one by one, so one bad event never holds back the others. Rows
    whose events the handler deferred stay pending, due again after DEFER_DELAY."""
    batch_handler = _batch_handlers_by_name[messages[0].handler]
    try:
        events = [event_from_payload(m.event_type, m.payload) for m in messages]
        with transaction.atomic():
            deferred = batch_handler(events) or set()
    except Exception as error:
        logger.info("batch of %d rows failed (%r); delivering them one by one", len(messages), error)
        outcomes = [_run(message) for message in messages]
        return DeliveryReport(delivered=sum(outcomes), failed=len(outcomes) - sum(outcomes))
    now = timezone.now()
    done = [m for m in messages if m.event_id not in deferred]
    OutboxMessage.objects.filter(pk__in=[m.pk for m in done]).update(
        attempts=F("attempts") + 1, status=OutboxMessage.Status.DONE, delivered_at=now
    )
    later = [m.pk for m in messages if m.event_id in deferred]
    if later:
        OutboxMessage.objects.filter(pk__in=later).update(available_at=now + DEFER_DELAY)
    return DeliveryReport(delivered=len(done), deferred=len(later))


def deliver_next(*, batch_size: int = 1) -> DeliveryReport | None:
    """Claim the next due row and deliver it. With ``batch_size`` > 1 and a batch
    handler, up to that many due rows of the same handler are claimed (in wallet
    order, SKIP LOCKED, so workers share the backlog without overlap) and applied in
    one go."""
    with transaction.atomic():
        message = _pending_due().order_by("available_at", "id").first()
        if message is None:
            return None
        if batch_size > 1 and message.handler in _batch_handlers_by_name:
            more = list(
                _pending_due()
                .filter(handler=message.handler)
                .exclude(pk=message.pk)
                .order_by("wallet_id", "id")[: batch_size - 1]
            )
            if more:
                return _run_batch([message, *more])
        delivered = _run(message)
        return DeliveryReport(delivered=int(delivered), failed=int(not delivered))


def deliver_pending(*, limit: int | None = None, batch_size: int = 1) -> DeliveryReport:
    """Deliver due pending rows until none is left (or about ``limit`` were handled):
    one transaction per row, or per wallet's batch with ``batch_size`` > 1."""
    report = DeliveryReport()
    while limit is None or report.delivered + report.failed < limit:
        outcome = deliver_next(batch_size=batch_size)
        if outcome is None:
            break
        report = report + outcome
        if outcome.deferred and not (outcome.delivered or outcome.failed):
            break  # only busy wallets were due: the next pass takes them
    return report


def retry_failed(message_ids: Iterable[int] | None = None) -> int:
    """Put failed (or backing-off) rows back in line for delivery now."""
    rows = OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE)
    if message_ids is not None:
        rows = rows.filter(pk__in=list(message_ids))
    return rows.update(status=OutboxMessage.Status.PENDING, available_at=timezone.now())


# --- The relay (consumers outside the money transaction) -------------------------------


@dataclass(frozen=True)
class RelayedMessage:
    """An outbox row claimed for the relay: what the broker message carries."""

    id: int
    subscription: str
    event_type: str
    event_id: str
    payload: dict
    request_id: str = ""


def relay_claim(*, limit: int, lease: dt.timedelta) -> list[RelayedMessage]:
    """Claim up to ``limit`` due rows of relayed subscriptions, oldest first, for
    ``lease``: in a transaction of their own (committed before anything is published,
    so no row lock is held across the network), they become due again only when the
    lease ends. A relay killed after claiming leaves them to the next one: published
    twice at worst, never lost."""
    if not _relayed:
        return []
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(status=OutboxMessage.Status.PENDING, available_at__lte=now, handler__in=sorted(_relayed))
            .order_by("available_at", "id")
            .values_list("id", "handler", "event_type", "event_id", "payload", "request_id")[:limit]
        )
        OutboxMessage.objects.filter(pk__in=[row[0] for row in rows]).update(
            available_at=now + lease, attempts=F("attempts") + 1
        )
    return [
        RelayedMessage(pk, handler, event_type, str(event_id), payload, request_id)
        for pk, handler, event_type, event_id, payload, request_id in rows
    ]


def relay_done(message_ids: Iterable[int]) -> int:
    """The broker confirmed these rows' messages: they are delivered (handed over)."""
    return OutboxMessage.objects.filter(pk__in=list(message_ids), status=OutboxMessage.Status.PENDING).update(
        status=OutboxMessage.Status.DONE, delivered_at=timezone.now(), last_error=""
    )


def relay_failed(message_ids: Iterable[int], error: str) -> int:
    """The broker did not take these rows' messages: due again after a backoff (by their
    attempts so far), the error kept for an operator."""
    rows = OutboxMessage.objects.filter(pk__in=list(message_ids), status=OutboxMessage.Status.PENDING)
    now = timezone.now()
    changed = 0
    for message in rows.only("id", "attempts"):
        changed += OutboxMessage.objects.filter(pk=message.pk).update(
            available_at=now + retry_delay(message.attempts), last_error=error[:4000]
        )
    return changed


def consume_relayed(subscription: str, *, event_type: str, event_id: str, payload: dict) -> bool:
    """Apply a relayed event for its subscription, once: the inbox record and the
    handler's effect commit together. False when it was applied before (a duplicate
    from the relay, or the broker redelivering)."""
    handler = _handlers_by_name.get(subscription)
    if handler is None or subscription not in _relayed:
        raise LookupError(f"no relayed subscription {subscription!r} here")
    event = event_from_payload(event_type, payload)
    if str(event.event_id) != str(event_id):
        raise ValueError(f"the message's event id {event_id} is not its payload's {event.event_id}")
    with transaction.atomic():
        if not _inbox_record(subscription, event.event_id):
            return False
        handler(event)
    return True


def inbox_purge(*, older_than: dt.timedelta, batch_size: int = 5000) -> int:
    """Delete inbox records older than ``older_than`` (longer than the relay could still
    deliver a duplicate of their event: the outbox keeps its delivered rows as long)."""
    cutoff = timezone.now() - older_than
    deleted = 0
    while True:
        ids = list(
            InboxRecord.objects.filter(received_at__lt=cutoff)
            .order_by("received_at", "id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += InboxRecord.objects.filter(pk__in=ids).delete()[0]


# --- Retention ----------------------------------------------------------------------------


def _delivered_before(cutoff: dt.datetime):
    return OutboxMessage.objects.filter(status=OutboxMessage.Status.DONE, delivered_at__lte=cutoff)


def delivered_count(*, older_than: dt.timedelta) -> int:
    """Delivered rows older than ``older_than``: what ``purge_delivered`` would delete."""
    return _delivered_before(timezone.now() - older_than).count()


def purge_delivered(*, older_than: dt.timedelta, batch_size: int | None = None) -> int:
    """Delete rows delivered more than ``older_than`` ago, oldest first, ``batch_size`` per
    statement, each in its own short transaction; returns how many. Pending and failed
    rows are never deleted: they are events a handler has still to apply. Safe to run
    in two processes at once (a row deleted by the other is simply not found)."""
    batch_size = batch_size or settings.IAAS_OUTBOX_PURGE_BATCH
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = timezone.now() - older_than
    total = 0
    while True:
        with transaction.atomic():
            oldest = _delivered_before(cutoff).order_by("delivered_at", "id").values("pk")[:batch_size]
            deleted, _ = OutboxMessage.objects.filter(pk__in=models.Subquery(oldest)).delete()
        total += deleted
        if deleted < batch_size:
            return total


def pending_count() -> int:
    return OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).count()


def undelivered_amounts(event_types: Iterable[type[Event]]) -> dict[tuple[str, str, str], int]:
    """Sum of ``amount`` over events not yet delivered, by (event type, wallet id, context):
    what Billing has still to apply. Used by reconciliation (I4)."""
    totals: dict[tuple[str, str, str], int] = defaultdict(int)
    rows = OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE).filter(
        event_type__in=[t.type_name() for t in event_types]
    )
    for event_type, payload in rows.values_list("event_type", "payload").iterator():
        totals[(event_type, payload["wallet_id"], payload["context"])] += payload["amount"]
    return dict(totals)


def undelivered_events(event_types: Iterable[type[Event]]) -> list[Event]:
    """Events of these types some handler has not yet applied (pending or failed), each
    once. Billing asks before invoicing a month whether charges of it are still in flight."""
    rows = (
        OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE)
        .filter(event_type__in=[t.type_name() for t in event_types])
        .values_list("event_id", "event_type", "payload")
        .order_by("id")
    )
    seen: dict = {}
    for event_id, event_type, payload in rows.iterator():
        if event_id not in seen:
            seen[event_id] = event_from_payload(event_type, payload)
    return list(seen.values())


def undelivered_amounts_relation(event_types: Iterable[type[Event]]) -> Relation:
    """``undelivered_amounts`` as SQL for reconciliation to join in the database:
    (event_type, wallet_id, context, amount), one row per undelivered outbox row."""
    rows = (
        OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE)
        .filter(event_type__in=[t.type_name() for t in event_types])
        .annotate(
            event_context=KT("payload__context"),
            event_amount=Cast(KT("payload__amount"), BigIntegerField()),
        )
        .values_list("event_type", "wallet_id", "event_context", "event_amount")
    )
    sql, params = rows.query.sql_with_params()
    return Relation(
        f"SELECT event_type, wallet_id, event_context AS context, event_amount AS amount FROM ({sql}) u",  # noqa: S608
        tuple(params),
    )


@dataclass(frozen=True)
class UndeliveredMessage:
    """An outbox row a handler has not applied: for reconciliation's report."""

    message_id: int
    event_id: str
    event_type: str
    handler: str
    wallet_id: str | None
    status: str
    attempts: int
    created_at: dt.datetime
    last_error: str


def stuck_messages(*, older_than: dt.timedelta) -> list[UndeliveredMessage]:
    """Rows that failed for good, or still wait ``older_than`` after they were written:
    an event a handler should have applied by now (a worker down, a handler failing)."""
    cutoff = timezone.now() - older_than
    rows = (
        OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE)
        .filter(models.Q(status=OutboxMessage.Status.FAILED) | models.Q(created_at__lte=cutoff))
        .order_by("id")
    )
    return [
        UndeliveredMessage(
            message_id=row.pk,
            event_id=str(row.event_id),
            event_type=row.event_type,
            handler=row.handler,
            wallet_id=str(row.wallet_id) if row.wallet_id else None,
            status=row.status,
            attempts=row.attempts,
            created_at=row.created_at,
            last_error=row.last_error,
        )
        for row in rows[:1000]
    ]


def undelivered_count() -> int:
    """Rows not delivered yet, pending or failed."""
    return OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE).count()
