"""The life of a sold service around suspension, written once for every selling
context (ARCHITECTURE.md, "A service's life"): which cause a refused charge records,
and when the termination clock runs out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from iaas.audit.services import changed_fields, object_type, record_change
from iaas.contracts import bus
from iaas.contracts.errors import DomainError, InsufficientFunds, WalletNotActive
from iaas.contracts.events import Event

from .models import AbstractSuspendable, SuspensionCause


def save_causes(
    service: AbstractSuspendable, *, stopped_at: dt.datetime, suspended: Callable[..., Event]
) -> None:
    """Save a locked service's causes. An active service that now has one stops, and
    ``suspended(reason=..., cause=...)`` builds the event that says so (ServerSuspended,
    SubscriptionSuspended) once it is saved (the event shows the service as it is now),
    published in the same transaction."""
    fields = list(service.CAUSE_UPDATE_FIELDS)
    stops = service.status == "active" and bool(service.suspension_causes)
    if stops:
        service.status = "suspended"
        service.suspended_at = stopped_at
        fields += ["status", "suspended_at"]
    service.save(update_fields=fields)
    if stops:
        cause = service.suspension_causes[0]
        reason = service.operator_reason if cause == SuspensionCause.OPERATOR else cause
        bus.publish(suspended(reason=reason, cause=cause))


def refusal_cause(refusal: DomainError) -> tuple[str, str]:
    """The suspension cause (and reason) a refused charge records: ``unpaid`` when the
    wallet is short of money, ``wallet_blocked`` when it is frozen or closed; any other
    refusal (a currency mismatch, a wallet gone) no change to the wallet can cure, so it
    is an ``operator`` hold with the error as its reason, for a person to resolve."""
    if isinstance(refusal, InsufficientFunds):
        return SuspensionCause.UNPAID, ""
    if isinstance(refusal, WalletNotActive):
        return SuspensionCause.WALLET_BLOCKED, ""
    return SuspensionCause.OPERATOR, f"Charging was refused ({refusal.code}): {refusal.detail}"


def record_refusal(service: AbstractSuspendable, refusal: DomainError, *, at: dt.datetime) -> str:
    """Record on a suspended (or about to be suspended) service why its charge was
    refused. A wallet that is no longer blocked but cannot pay turns ``wallet_blocked``
    into ``unpaid`` (the clock starts); ``unpaid`` keeps the instant it began."""
    cause, reason = refusal_cause(refusal)
    if cause == SuspensionCause.UNPAID:
        service.lift_cause(SuspensionCause.WALLET_BLOCKED)
    service.add_cause(cause, at=at, reason=reason)
    return cause


def terminates_at(service: AbstractSuspendable, *, grace: dt.timedelta) -> dt.datetime | None:
    """When the batch run ends the service: ``grace`` after it became unpaid, while
    ``unpaid`` is its only cause; None while no clock runs."""
    since = service.unpaid_alone_since()
    return None if since is None else since + grace


def is_overdue(service: AbstractSuspendable, *, now: dt.datetime, grace: dt.timedelta) -> bool:
    deadline = terminates_at(service, grace=grace)
    return deadline is not None and deadline <= now


def snapshot(service: AbstractSuspendable) -> dict:
    """What the history of a service's suspensions keeps, before and after a change."""
    return {
        "status": service.status,
        "suspension_causes": service.suspension_causes,
        "operator_reason": service.operator_reason,
    }


def record(
    service: AbstractSuspendable,
    before: dict,
    *,
    action: str,
    actor_id: int | None = None,
    actor_label: str = "",
    reason: str = "",
) -> None:
    """Keep a change of a service's status or causes in its history (iaas.audit), in
    the caller's transaction; nothing when nothing changed."""
    old, new = changed_fields(before, snapshot(service))
    if not new:
        return
    record_change(
        obj_type=object_type(service),
        obj_id=service.pk,
        action=action,
        before=old,
        after=new,
        actor_id=actor_id,
        actor_label=actor_label,
        reason=reason,
    )
