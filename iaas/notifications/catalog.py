"""The events customers can hear about: each webhook event type, the integration event
it comes from, and how its body is built. The body is documented per type in
docs/webhooks.md (with an example of each in docs/webhook-examples.json, written from real
flows by tests/notifications/test_customer_journey.py): a stable ``id`` (the event's id,
also the ``webhook-id`` header), ``type``, ``created_at`` (when it happened) and ``data``:
``object``, the resource as the API shows it at that moment, plus the facts the type adds
(a suspension's cause, when a service ends, what a reversed top-up took)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rest_framework.fields import DateTimeField

from iaas.contracts import events as e

# Moments are printed as the API prints them (ISO 8601, UTC as "Z").
_moment = DateTimeField().to_representation


@dataclass(frozen=True)
class EventType:
    name: str  # the webhook event type: "<object>.<what happened>"
    source: type[e.Event]
    description: str
    # The facts beside the object: a function of the event (plain JSON data).
    facts: Callable[[e.Event], dict] = lambda event: {}
    # Which events of the source type this is (one source may feed several types).
    when: Callable[[e.Event], bool] = lambda event: True
    # The resource type name, for the body's data.object when the event has none.
    object_name: str = ""


def _suspension(event) -> dict:
    return {"cause": event.cause, "reason": event.reason}


def _ending(event) -> dict:
    return {"reason": event.reason}


def _ends_soon(event: e.ServiceEndsSoon) -> dict:
    return {"ends_at": _moment(event.ends_at)}


def _reversal(event: e.TopUpReversed) -> dict:
    return {
        "kind": event.kind,
        "amount": event.amount,
        "taken": event.taken,
        "debt_added": event.debt_added,
        "currency": event.currency,
        "frozen": event.frozen,
    }


def _of_kind(kind: str) -> Callable[[e.Event], bool]:
    return lambda event: event.kind == kind


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        "wallet.low_balance",
        e.LowBalanceReached,
        "The wallet's available balance went below its low_balance_threshold.",
        facts=lambda ev: {"available": ev.available, "threshold": ev.threshold, "currency": ev.currency},
    ),
    EventType("top_up.succeeded", e.WalletToppedUp, "A top-up succeeded: the wallet was credited."),
    EventType(
        "top_up.failed",
        e.TopUpFailed,
        "A top-up failed (cancelled or expired at the provider, or rejected).",
        facts=lambda ev: {"reason": ev.reason},
    ),
    EventType(
        "top_up.reversed",
        e.TopUpReversed,
        "The payment provider took money back from a succeeded top-up (a card refund or a "
        "dispute): taken from the wallet's available balance, the rest owed as its debt.",
        facts=_reversal,
    ),
    EventType("refund.created", e.ChargeRefunded, "A charge was refunded to the wallet."),
    EventType("invoice.issued", e.InvoiceIssued, "A monthly invoice was issued."),
    EventType("server.suspended", e.ServerSuspended, "A server was suspended.", facts=_suspension),
    EventType("server.resumed", e.ServerResumed, "A suspended server runs again."),
    EventType(
        "server.termination_scheduled",
        e.ServiceEndsSoon,
        "A server suspended for non-payment will be terminated in about a day unless its wallet pays.",
        facts=_ends_soon,
        when=_of_kind("server"),
    ),
    EventType("server.terminated", e.ServerTerminated, "A server was terminated.", facts=_ending),
    EventType(
        "subscription.suspended",
        e.SubscriptionSuspended,
        "A hosting subscription was suspended.",
        facts=_suspension,
    ),
    EventType("subscription.resumed", e.SubscriptionResumed, "A suspended subscription runs again."),
    EventType(
        "subscription.cancellation_scheduled",
        e.ServiceEndsSoon,
        "A subscription suspended for non-payment will be cancelled in about a day unless its wallet pays.",
        facts=_ends_soon,
        when=_of_kind("subscription"),
    ),
    EventType(
        "subscription.cancelled", e.SubscriptionCancelled, "A subscription was cancelled.", facts=_ending
    ),
    EventType("volume.suspended", e.VolumeSuspended, "A volume was suspended.", facts=_suspension),
    EventType("volume.resumed", e.VolumeResumed, "A suspended volume runs again."),
    EventType(
        "volume.deletion_scheduled",
        e.ServiceEndsSoon,
        "A volume suspended for non-payment will be deleted in about a day unless its wallet pays.",
        facts=_ends_soon,
        when=_of_kind("volume"),
    ),
    EventType("volume.deleted", e.VolumeDeleted, "A volume was deleted.", facts=_ending),
)

BY_NAME: dict[str, EventType] = {event_type.name: event_type for event_type in EVENT_TYPES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def types_of(event: e.Event) -> list[EventType]:
    """The webhook event types an integration event is (none, one)."""
    return [t for t in EVENT_TYPES if isinstance(event, t.source) and t.when(event)]


def source_types() -> list[type[e.Event]]:
    return list(dict.fromkeys(t.source for t in EVENT_TYPES))


def body(event_type: EventType, event: e.Event) -> dict:
    """The JSON body customers receive for ``event`` as ``event_type``."""
    resource = getattr(event, "resource", None)
    return {
        "id": str(event.event_id),
        "type": event_type.name,
        "created_at": _moment(event.occurred_at),
        "data": {
            "object": resource if resource is not None else _bare_object(event),
            **event_type.facts(event),
        },
    }


def _bare_object(event: e.Event) -> dict:
    """For an event stored before it carried its resource: its ids, as much as is known."""
    payload = event.to_payload()
    return {
        key: value
        for key, value in payload.items()
        if key.endswith("_id") and key not in ("event_id", "owner_id")
    }
