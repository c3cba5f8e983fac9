"""What the kit knows of a context's sold services (servers, subscriptions, volumes) to
tell their owners what happened to them: its lifecycle events own their facts (whose
service it is, and the service exactly as its API detail shows it after the change), so
a consumer that sees events only (iaas.notifications) needs to read nothing back.

A context describes its services once, in a ``SoldServices`` (a metered context's
``MeteredServices`` is one), and registers it through its AppConfig (``sold``); the
kit's runs over every context (the warning before a service ends, iaas.spending.ending)
find it there."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from django.db.models import QuerySet
from django.utils.module_loading import import_string

from iaas.api.representation import as_shown
from iaas.contracts.events import Event, ServiceEndsSoon

from . import lifecycle
from .models import AbstractSuspendable
from .spender import Spender


@dataclass(frozen=True)
class ServiceEvents:
    """A sold service's lifecycle events (ServerSuspended, ...), each with the service's id
    under ``id_field`` ("server_id"), its wallet's id, its owner and the service as shown."""

    id_field: str
    suspended: type[Event]  # (reason=, cause=)
    resumed: type[Event]
    ended: type[Event]  # (reason=)


@dataclass(frozen=True, kw_only=True)
class SoldServices:
    """One context's sold services: its ``spender`` (the context's name), its
    ``service_model``, its lifecycle ``events``, the ``grace`` an unpaid service is given
    before the context's batch run ends it, and ``serializer``: the dotted path of the
    serializer its API detail renders a service with (imported when first needed: the
    API's serializers import the context's services)."""

    spender: Spender
    service_model: type[AbstractSuspendable]
    events: ServiceEvents
    grace: Callable[[], dt.timedelta]
    serializer: str

    @property
    def context(self) -> str:
        return self.spender.context

    @property
    def kind(self) -> str:
        """What the customer calls one: "server", "subscription", "volume"."""
        return self.service_model._meta.model_name

    @cached_property
    def serializer_class(self):
        return import_string(self.serializer)

    def terminates_at(self, service: AbstractSuspendable) -> dt.datetime | None:
        """When the context's batch run ends this service: the grace period after it
        became unpaid, while that is its only cause; None when no clock runs."""
        if service.status != "suspended":
            return None
        return lifecycle.terminates_at(service, grace=self.grace())

    # --- the service as its API shows it ---------------------------------------------------

    def with_shown_data(self, services: QuerySet, *, now: dt.datetime | None = None) -> QuerySet:
        """``services`` with what ``shown`` needs beyond their own columns, read in the
        same query (a metered service's usage of the month): nothing here."""
        return services

    def shown(self, service: AbstractSuspendable, *, now: dt.datetime | None = None) -> dict:
        """The service as its API detail shows it now (plain JSON data)."""
        return as_shown(self.serializer_class, service)

    def told(self, event: type[Event], service: AbstractSuspendable, *, now=None, **fields) -> Event:
        """``event`` about ``service`` in its present state (call it once the change is
        made): its id, wallet and owner, and the service as shown."""
        return event(
            **{self.events.id_field: service.pk},
            wallet_id=service.wallet_id,
            owner_id=service.owner_id,
            resource=self.shown(service, now=now),
            **fields,
        )

    def suspended(self, service: AbstractSuspendable, *, now=None, reason: str, cause: str) -> Event:
        return self.told(self.events.suspended, service, now=now, reason=reason, cause=cause)

    def resumed(self, service: AbstractSuspendable, *, now=None) -> Event:
        return self.told(self.events.resumed, service, now=now)

    def ended(self, service: AbstractSuspendable, *, now=None, reason: str) -> Event:
        return self.told(self.events.ended, service, now=now, reason=reason)

    def ends_soon(self, service: AbstractSuspendable, *, now=None) -> ServiceEndsSoon:
        """The warning that a service suspended for unpaid alone will be ended when its
        grace runs out."""
        return ServiceEndsSoon(
            context=self.context,
            kind=self.kind,
            service_id=service.pk,
            wallet_id=service.wallet_id,
            owner_id=service.owner_id,
            ends_at=self.terminates_at(service),
            resource=self.shown(service, now=now),
        )
