"""The life of a service metered by the hour, written once for every context that sells
one (Cloud's servers, Storage's volumes): its hours accrued into its usage records,
suspended when its wallet cannot pay, resumed when it can (or by an operator), ended by
the customer, an operator or the termination clock (ARCHITECTURE.md, "A service's
life"). The set-based metering run is in ``iaas.spending.metering``; this is the
one-service path it is held to, and what customers and operators do to one service.

Lock order (ARCHITECTURE.md): the service row, then the context's allowance row, then
(inside Billing's reserve) the wallet row and the hold.

A context describes its service once, in a ``MeteredServices``: its model, its events,
how its hourly rate is read from its row (``terms``: SQL expressions over the service
and its plan, read in the statement that locks it), its grace period and the serializer
its events show it with (iaas.spending.sold).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass
from functools import cached_property

from django.conf import settings
from django.db.models import F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.contracts import bus
from iaas.contracts.errors import DomainError, InvalidState, ServiceBusy
from iaas.contracts.types import Money

from . import lifecycle, locks, usage
from .batch import Life
from .models import AbstractMeteredService, SuspensionCause
from .sold import ServiceEvents, SoldServices

__all__ = ["MeteredServices", "MeteringOutcome", "ServiceEvents", "grace_hours"]

HOUR = usage.HOUR
BATCH = "bill_usage"  # how the metering run signs what it changes
NO_WALLET = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class MeteringOutcome:
    """What the per-service metering path did to one service."""

    service_id: uuid.UUID
    wallet_id: uuid.UUID
    action: str  # see ACTIONS
    hours: int = 0
    amount: int = 0
    currency: str = ""

    ACTIONS = ("charged", "up_to_date", "suspended", "resumed", "still_suspended", "ended", "busy")


@dataclass(frozen=True, kw_only=True)
class MeteredServices(SoldServices):
    """One context's metered services (its sold services, iaas.spending.sold). ``terms``
    maps ``rate_per_hour`` (1/divisor minor units, the divisor being the usage model's
    LIST_DIVISOR), ``rate_cap`` (a month's cap for a record not yet created, minor units)
    and ``rate_currency`` to expressions over the service row
    (``F("plan__price_per_hour")``); ``grace`` says how long a service unpaid alone stays
    suspended before it ends."""

    service_model: type[AbstractMeteredService]
    terms: dict

    @property
    def usage_model(self):
        return self.spender.usage_model

    @property
    def divisor(self) -> int:
        return self.usage_model.LIST_DIVISOR

    @property
    def noun(self) -> str:
        return str(self.service_model._meta.verbose_name)

    @cached_property
    def life(self) -> Life:
        """How the batch runs tell what happened to a service (iaas.spending.batch)."""
        model = self.service_model
        ended_action = "ended"
        return Life(
            suspended=lambda s, **why: self.suspended(s, **why),
            resumed=lambda s: self.resumed(s),
            ended=lambda s: self.ended(s, reason="unpaid"),
            ended_status=model.ENDED_STATUS,
            ended_at=model.ENDED_AT,
            ended_action=ended_action,
            history_action=_history_verb(model.ENDED_STATUS),
            actor_label=BATCH,
        )

    # --- reading a service's rate ---------------------------------------------------------

    def rate(self, service: AbstractMeteredService) -> usage.Rate:
        """The service's hourly rate, from the ``terms`` read with its row (read once more
        when the row was locked without them)."""
        if not hasattr(service, "rate_per_hour"):
            row = self.service_model.objects.filter(pk=service.pk).annotate(**self.terms)
            terms = row.values("rate_per_hour", "rate_cap", "rate_currency").get()
            for name, value in terms.items():
                setattr(service, name, value)
        return usage.Rate(service.rate_per_hour, service.rate_cap, service.rate_currency)

    def forget_rate(self, service: AbstractMeteredService) -> None:
        """The service's rate changed (a volume grew): read it again when next needed."""
        for name in ("rate_per_hour", "rate_cap", "rate_currency"):
            service.__dict__.pop(name, None)

    # --- accruing ---------------------------------------------------------------------------

    def accrue(
        self, service: AbstractMeteredService, *, start: dt.datetime, hours: int, now: dt.datetime
    ) -> int:
        """Spend ``hours`` of a locked service from ``start`` (priced under the monthly
        cap) out of the context's allowance and add them to its usage records: the
        one-service form of a metering batch. Returns the amount spent (0 when the cap
        covers every hour, or the hours round to nothing yet)."""
        if hours <= 0:
            return 0
        rate = self.rate(service)
        spent = usage.spent_in_months(self.usage_model, [service.pk], from_month=usage.month_of(start))
        accruals = usage.price_hours(
            service_id=service.pk,
            start=start,
            hours=hours,
            per_hour=rate.per_hour,
            cap=rate.cap,
            spent=spent.get(service.pk, {}),
            divisor=self.divisor,
        )
        return self._spend_and_record(service, accruals, rate.currency, now=now)

    def grow(
        self, service: AbstractMeteredService, *, per_hour: int, cap: int, currency: str, now: dt.datetime
    ) -> int:
        """A locked service's rate grew by ``per_hour`` (1/divisor minor units) and its
        monthly cap to ``cap`` (a volume grown): the rest of a paid hour still running is
        spent at once at the new rate, and its month's usage record keeps the higher cap
        (a cap never falls mid-month), the month's amount rising to min(cap, list) where
        the old cap held it down (I11's floor). A later month starts at the new cap.
        Nothing is charged for a paid hour that started in an earlier month (that month
        may be closed and invoiced): its record is left alone. Returns the amount spent."""
        hour_start = service.paid_until - HOUR
        month = usage.month_of(hour_start)
        if month < usage.month_of(now):
            return 0  # its latest hour is in a past month: nothing of this month accrued yet
        running = service.paid_until > now
        already = usage.spent_in_months(self.usage_model, [service.pk], from_month=month).get(service.pk, {})
        held = already.get(month, usage.MonthSpent())
        raised = {month: dataclasses.replace(held, cap=max(held.cap or 0, cap))}
        accrual = usage.price_extra(
            service_id=service.pk,
            hour_start=hour_start,
            exact=per_hour if running else 0,
            cap=cap,
            spent=raised,
            divisor=self.divisor,
        )
        if accrual.amount:  # the allowance first, then the record (the lock order)
            price = Money(accrual.amount, currency)
            self.spender.spend_allowance(wallet_id=service.wallet_id, owner_id=service.owner_id, price=price)
        # A plain UPDATE of the record its latest hour made, not the upsert: the step may
        # spend more than it lists (the floor), which only the whole row's CHECKs allow.
        due = {"close_due_at": Coalesce(F("close_due_at"), Value(usage.close_due_at(month, now=now)))}
        updated = self.usage_model.objects.filter(service_id=service.pk, month=month).update(
            cap=Greatest(F("cap"), Value(cap)),
            list_exact=F("list_exact") + accrual.list_exact,
            list_amount=F("list_amount") + accrual.list_amount,
            amount=F("amount") + accrual.amount,
            updated_at=now,
            **(due if accrual.amount else {}),
        )
        if updated != 1:
            raise RuntimeError(f"{self.noun} {service.pk} has no usage record for {month}")
        return accrual.amount

    def _spend_and_record(
        self,
        service: AbstractMeteredService,
        accruals: list[usage.Accrual],
        currency: str,
        *,
        now: dt.datetime,
    ) -> int:
        amount = sum(a.amount for a in accruals)
        if amount:
            self.spender.spend_allowance(
                wallet_id=service.wallet_id, owner_id=service.owner_id, price=Money(amount, currency)
            )
        who = usage.UsageOwner(service.wallet_id, service.owner_id, currency)
        usage.upsert_accruals(self.usage_model, [(a, who) for a in accruals], now=now)
        return amount

    def start(self, service: AbstractMeteredService, *, now: dt.datetime) -> AbstractMeteredService:
        """Save a new service (unsaved, its plan set) and spend its first hour from ``now``
        into its usage record, in the caller's transaction: on a refusal (402, 409) the
        caller's transaction rolls back and nothing is created."""
        service.paid_until = now + HOUR
        service.save(force_insert=True)
        spent = self.accrue(service, start=now, hours=1, now=now)
        service.usage_hours, service.usage_amount = 1, spent  # its month so far, as the API shows it
        if not spent:
            # Nothing spent yet (the hour rounds to nothing): the wallet is checked all the
            # same, and must hold a minor unit for the hours that follow.
            currency = self.rate(service).currency
            self.spender.hold_at_least(
                wallet_id=service.wallet_id, owner_id=service.owner_id, currency=currency
            )
        return service

    def usage_due(self, service: AbstractMeteredService, *, now: dt.datetime) -> list[usage.Accrual]:
        """What a run at ``now`` would accrue for an active service (read only)."""
        start, rate = service.paid_until, self.rate(service)
        spent = usage.spent_in_months(self.usage_model, [service.pk], from_month=usage.month_of(start))
        return usage.price_hours(
            service_id=service.pk,
            start=start,
            hours=usage.started_hours(start, now),
            per_hour=rate.per_hour,
            cap=rate.cap,
            spent=spent.get(service.pk, {}),
            divisor=self.divisor,
        )

    # --- what customers and operators do ----------------------------------------------

    def end(self, *, service_id: uuid.UUID, owner_id: int | None = None, reason: str = "customer"):
        """End a service (a customer's delete, an operator's termination). The hour
        already paid is not refunded; no further charges. Ending twice is harmless."""
        return retry_transaction(self._end)(service_id=service_id, owner_id=owner_id, reason=reason)

    def _end(self, *, service_id: uuid.UUID, owner_id: int | None, reason: str):
        service = locks.service_lock(self.service_model, service_id, owner_id=owner_id)
        if service.status != self.service_model.ENDED_STATUS:
            self._mark_ended(service, at=timezone.now(), reason=reason)
        return service

    def _mark_ended(self, service: AbstractMeteredService, *, at: dt.datetime, reason: str) -> None:
        """End a locked service and say so. What it accrued and was not closed yet is
        closed by the next settlement run (a service's end)."""
        service.status = self.service_model.ENDED_STATUS
        setattr(service, self.service_model.ENDED_AT, at)
        service.save(update_fields=["status", self.service_model.ENDED_AT])
        self.close_usage_of_ended([service.pk], now=at)
        bus.publish(self.ended(service, now=at, reason=reason))

    def close_usage_of_ended(self, service_ids: list[uuid.UUID], *, now: dt.datetime) -> None:
        """A service that ends has its open usage closed by the next settlement run."""
        if service_ids:
            self.usage_model.objects.filter(service_id__in=service_ids, amount__gt=F("closed_amount")).update(
                close_due_at=now
            )

    def suspend(self, *, service_id: uuid.UUID, reason: str, actor_id: int | None = None):
        """An operator suspends a service (cause ``operator``, with a reason). One already
        suspended for another cause gains this one; it runs again only when every cause
        is lifted, and nothing ends it while an operator holds it."""
        reason = (reason or "").strip()
        if not reason:
            raise InvalidState("An operator's suspension needs a reason.")
        return retry_transaction(self._suspend)(service_id=service_id, reason=reason, actor_id=actor_id)

    def _suspend(self, *, service_id: uuid.UUID, reason: str, actor_id: int | None):
        service = locks.service_lock(self.service_model, service_id)
        if service.status == self.service_model.ENDED_STATUS:
            raise InvalidState(f"A {service.status} {self.noun} cannot be suspended.")
        if service.has_cause(SuspensionCause.OPERATOR):
            raise InvalidState(f"This {self.noun} is already suspended by an operator.")
        before = lifecycle.snapshot(service)
        service.add_cause(SuspensionCause.OPERATOR, at=timezone.now(), reason=reason)
        self._save_causes(service, stopped_at=timezone.now())
        lifecycle.record(service, before, action="suspend", actor_id=actor_id, reason=reason)
        return service

    def _save_causes(self, service: AbstractMeteredService, *, stopped_at: dt.datetime) -> None:
        """Save a locked service's causes; when it was active and now has one, it stops."""
        lifecycle.save_causes(
            service,
            stopped_at=stopped_at,
            suspended=lambda **why: self.suspended(service, now=stopped_at, **why),
        )

    def resume(self, *, service_id: uuid.UUID, now: dt.datetime | None = None, actor_id: int | None = None):
        """An operator resumes a service: every cause is lifted and what it owes is
        charged, exactly as the batch run's resumption does (the hours it ran unpaid
        before it stopped, then the hour starting now unless a paid hour is still
        running). When the wallet refuses, nothing changes and the refusal is raised."""
        return retry_transaction(self._resume)(service_id=service_id, now=now, actor_id=actor_id)

    def _resume(self, *, service_id: uuid.UUID, now: dt.datetime | None, actor_id: int | None):
        service = locks.service_lock(self.service_model, service_id)
        if service.status != "suspended":
            raise InvalidState(f"Only a suspended {self.noun} can be resumed (this one is {service.status}).")
        before = lifecycle.snapshot(service)
        self._resume_paying(service, now=now or timezone.now())
        lifecycle.record(service, before, action="resume", actor_id=actor_id)
        return service

    def lift_operator_hold(
        self, *, service_id: uuid.UUID, now: dt.datetime | None = None, actor_id: int | None = None
    ):
        """An operator lifts their own hold. When no other cause holds, the service
        resumes, charged as ``resume`` (a refusal changes nothing); when it is also unpaid
        or its wallet is blocked, it stays suspended for those and the batch runs take
        over (the termination clock runs again for ``unpaid``)."""
        return retry_transaction(self._lift_operator_hold)(service_id=service_id, now=now, actor_id=actor_id)

    def _lift_operator_hold(self, *, service_id: uuid.UUID, now: dt.datetime | None, actor_id: int | None):
        service = locks.service_lock(self.service_model, service_id)
        if not service.has_cause(SuspensionCause.OPERATOR):
            raise InvalidState(f"This {self.noun} is not suspended by an operator.")
        before = lifecycle.snapshot(service)
        service.lift_cause(SuspensionCause.OPERATOR)
        if service.suspension_causes:
            service.save(update_fields=self.service_model.CAUSE_UPDATE_FIELDS)
        else:
            self._resume_paying(service, now=now or timezone.now())
        lifecycle.record(service, before, action="lift_operator_hold", actor_id=actor_id)
        return service

    def _resume_paying(self, service: AbstractMeteredService, *, now: dt.datetime) -> tuple[int, int]:
        """Resume a locked, suspended service, paying what it owes: the hours it ran
        unpaid before it stopped, then (unless a paid hour still runs) the hour starting
        now. The suspended time itself is never charged. Every path that resumes a
        service comes here, so an hour is charged once whoever resumes it. Returns
        (hours, amount)."""
        ran_until = service.suspended_at or service.paid_until
        hours = usage.started_hours(service.paid_until, ran_until)
        amount = self.accrue(service, start=service.paid_until, hours=hours, now=now)
        paid_until = service.paid_until + hours * HOUR
        if paid_until <= now:  # priced after the owed hours: they count towards the cap
            amount += self.accrue(service, start=now, hours=1, now=now)
            paid_until, hours = now + HOUR, hours + 1
        for cause in service.suspension_causes:
            service.lift_cause(cause)
        service.status = "active"
        service.suspended_at = None
        service.paid_until = paid_until
        service.save(
            update_fields=["status", "suspended_at", "paid_until", *self.service_model.CAUSE_UPDATE_FIELDS]
        )
        bus.publish(self.resumed(service, now=now))
        return hours, amount

    # --- metering one service at a time (the path a failed batch falls back to) -------------

    def bill_one(self, *, service_id: uuid.UUID, now: dt.datetime, grace: dt.timedelta) -> MeteringOutcome:
        """Meter one service at ``now``, one transaction at a time (never two wallets in
        one):

        - active: accrue the started hours since ``paid_until``; when the wallet refuses,
          suspend it for the refusal's cause in a new transaction;
        - suspended for unpaid or a blocked wallet (never an operator's hold): when the
          wallet can pay what it owes, resume it; otherwise end it once unpaid alone for
          longer than ``grace``;
        - ended: nothing, ever.

        A service another transaction holds is skipped ("busy"): the next run meters it.
        """
        status = self.service_model.objects.filter(pk=service_id).values_list("status", flat=True).first()
        if status == "active":
            try:
                return retry_transaction(self._charge_due)(service_id=service_id, now=now)
            except ServiceBusy:
                raise  # not a refusal: nothing was decided, the next run tries again
            except DomainError as refusal:
                return retry_transaction(self._suspend_refused)(
                    service_id=service_id, now=now, refusal=refusal
                )
        if status == "suspended":
            try:
                return retry_transaction(self._resume_paid)(service_id=service_id, now=now)
            except ServiceBusy:
                raise
            except DomainError as refusal:
                return retry_transaction(self._stays_suspended)(
                    service_id=service_id, now=now, grace=grace, refusal=refusal
                )
        return MeteringOutcome(service_id, NO_WALLET, "up_to_date")

    def _charge_due(self, *, service_id: uuid.UUID, now: dt.datetime) -> MeteringOutcome:
        service = locks.service_try_lock(self.service_model, service_id, terms=self.terms)
        if service is None:
            return MeteringOutcome(service_id, NO_WALLET, "busy")
        if service.status != "active" or service.paid_until >= now:
            return MeteringOutcome(service.pk, service.wallet_id, "up_to_date")
        hours = usage.started_hours(service.paid_until, now)
        amount = self.accrue(service, start=service.paid_until, hours=hours, now=now)
        service.paid_until += hours * HOUR
        service.save(update_fields=["paid_until"])
        return MeteringOutcome(service.pk, service.wallet_id, "charged", hours, amount, service.rate_currency)

    def _suspend_refused(
        self, *, service_id: uuid.UUID, now: dt.datetime, refusal: DomainError
    ) -> MeteringOutcome:
        """The charge was refused and rolled back: suspend for the refusal's cause
        (unpaid, wallet_blocked, or an operator hold for what no top-up can cure),
        unless another run paid it since."""
        service = locks.service_lock(self.service_model, service_id)
        if service.status != "active" or service.paid_until >= now:
            return MeteringOutcome(service.pk, service.wallet_id, "up_to_date")
        before = lifecycle.snapshot(service)
        lifecycle.record_refusal(service, refusal, at=now)
        self._save_causes(service, stopped_at=now)
        lifecycle.record(service, before, action="suspend", actor_label=BATCH, reason=refusal.code)
        return MeteringOutcome(service.pk, service.wallet_id, "suspended")

    @staticmethod
    def _batch_may_resume(service: AbstractMeteredService) -> bool:
        """The batch lifts only its own causes: never an operator's hold."""
        return service.status == "suspended" and not service.has_cause(SuspensionCause.OPERATOR)

    def _resume_paid(self, *, service_id: uuid.UUID, now: dt.datetime) -> MeteringOutcome:
        """Pay what a service suspended for unpaid or a blocked wallet owes, and resume it."""
        service = locks.service_try_lock(self.service_model, service_id, terms=self.terms)
        if service is None:
            return MeteringOutcome(service_id, NO_WALLET, "busy")
        if not self._batch_may_resume(service):
            return MeteringOutcome(service.pk, service.wallet_id, "up_to_date")
        before = lifecycle.snapshot(service)
        hours, amount = self._resume_paying(service, now=now)
        lifecycle.record(service, before, action="resume", actor_label=BATCH)
        return MeteringOutcome(service.pk, service.wallet_id, "resumed", hours, amount, service.rate_currency)

    def _stays_suspended(
        self, *, service_id: uuid.UUID, now: dt.datetime, grace: dt.timedelta, refusal: DomainError
    ) -> MeteringOutcome:
        """The resumption was refused: record why, and end a service unpaid (alone) for
        longer than ``grace``."""
        service = locks.service_lock(self.service_model, service_id)
        if not self._batch_may_resume(service):
            return MeteringOutcome(service.pk, service.wallet_id, "up_to_date")
        before = lifecycle.snapshot(service)
        lifecycle.record_refusal(service, refusal, at=now)
        service.save(update_fields=self.service_model.CAUSE_UPDATE_FIELDS)
        if lifecycle.is_overdue(service, now=now, grace=grace):
            self._mark_ended(service, at=now, reason="unpaid")
            lifecycle.record(
                service, before, action=self.life.history_action, actor_label=BATCH, reason="unpaid"
            )
            return MeteringOutcome(service.pk, service.wallet_id, "ended")
        lifecycle.record(service, before, action="change_causes", actor_label=BATCH, reason=refusal.code)
        return MeteringOutcome(service.pk, service.wallet_id, "still_suspended")

    # --- reads for the customer API ----------------------------------------------------------

    def owned(self, *, owner_id: int, now: dt.datetime | None = None):
        """The customer's services, newest first, each with its usage of the current month
        (``with_shown_data``), so a page of services is one query, not one more per
        service."""
        services = self.service_model.objects.filter(owner_id=owner_id)
        return self.with_shown_data(services, now=now).order_by("-created_at", "id")

    def with_shown_data(self, services: QuerySet, *, now: dt.datetime | None = None) -> QuerySet:
        """``services`` each with its usage of the current month (``usage_hours``,
        ``usage_amount``; 0 without a record), read in the same query (two probes of the
        usage records' unique (service, month) index per row)."""
        record = self.usage_model.objects.filter(
            service_id=OuterRef("pk"), month=usage.month_of(now or timezone.now())
        )
        return services.annotate(
            usage_hours=Coalesce(Subquery(record.values("hours")[:1]), Value(0)),
            usage_amount=Coalesce(Subquery(record.values("amount")[:1]), Value(0)),
        )

    def shown(self, service: AbstractMeteredService, *, now: dt.datetime | None = None) -> dict:
        """The service as its API detail shows it at ``now``: its usage of the month is
        read unless it came with the service (``with_shown_data``, or set by the batch
        that changed it), and then stays with it (a response rendered after the change
        shows the same)."""
        if not hasattr(service, "usage_hours"):
            service.usage_hours, service.usage_amount = self.usage_this_month(service.pk, now=now)
        return super().shown(service, now=now)

    def usage_this_month(self, service_id: uuid.UUID, *, now: dt.datetime | None = None) -> tuple[int, int]:
        """(hours, amount) of one service's usage in the current month; (0, 0) without a
        record. For a service read without ``owned``'s annotations (just bought, ended)."""
        return usage.usage_this_month(self.usage_model, service_id, now=now)

    # --- how a closed usage record reads -----------------------------------------------------

    def describe_usage(self, records: list) -> dict[int, str]:
        """How each closed usage record reads on its charge, the invoice and the ledger:
        the service's name, the hours and the span (one query for a settlement batch).
        ``records``: the settlement's rows (a usage record's fields as attributes)."""
        names = dict(
            self.service_model.objects.filter(id__in={r.service_id for r in records})
            .values_list("id", "name")
            .iterator()
        )
        zone = timezone.get_current_timezone()
        noun = self.noun.capitalize()
        return {
            r.id: (
                f"{noun} {names.get(r.service_id, r.service_id)}, {r.hours - r.closed_hours} hour(s) "
                f"{r.closed_until.astimezone(zone):{MOMENT}} to {r.accrued_until.astimezone(zone):{MOMENT}}"
            )
            for r in records
        }


MOMENT = "%Y-%m-%d %H:%M"


def grace_hours(context: str, default: int) -> int:
    """A metered context's grace period in hours: IAAS_GRACE_HOURS' entry for it, else
    the context's default."""
    return settings.IAAS_GRACE_HOURS.get(context, default)


def _history_verb(ended_status: str) -> str:
    """How a service's history names its end: "terminate" for "terminated"."""
    return {"terminated": "terminate", "deleted": "delete", "cancelled": "cancel"}.get(ended_status, "end")
