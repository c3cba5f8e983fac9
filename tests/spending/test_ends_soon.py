"""The warning before a service ends (iaas.spending.ending, the job warn_ends): the owner
of a service suspended for want of money alone hears once per suspension, a day
(IAAS_END_WARNING_HOURS) before its context's batch run ends it, when and what ends;
never for an operator's hold, a blocked wallet or a service already ended. Every context
alike."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from iaas.contracts.events import ServiceEndsSoon
from iaas.operations.wallet_status import wallet_status_change
from iaas.spending import ending
from iaas.spending.apps import sold_contexts
from tests.factories import UserFactory, funded_wallet

from .contexts import CLOUD, CONTEXTS, empty, moment, top_up

pytestmark = pytest.mark.django_db

H = dt.timedelta(hours=1)
DAY = dt.timedelta(hours=24)


def warn(ctx, now: dt.datetime) -> int:
    return ending.warn_ends(ctx.sold, now=now)


def warnings(published: list) -> list[ServiceEndsSoon]:
    return [event for event in published if isinstance(event, ServiceEndsSoon)]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_the_owner_is_warned_once_a_day_before_the_end(ctx, customer, catalog, published):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    ctx.run_batch(ctx.refused)
    ends = ctx.ends_at(ctx.refused)
    assert warn(ctx, ends - DAY - H) == 0  # more than a day before
    assert warn(ctx, ends - DAY) == 1
    (event,) = warnings(published)
    assert (event.context, event.kind, event.service_id, event.wallet_id, event.owner_id, event.ends_at) == (
        ctx.name,
        ctx.kind,
        service.id,
        wallet.id,
        customer.pk,
        ends,
    )
    assert event.resource == ctx.detail(service, ends - DAY)
    assert moment(event.resource[ctx.ends_field]) == ends
    assert warn(ctx, ends - DAY + 10 * dt.timedelta(minutes=1)) == 0  # once per suspension
    assert warn(ctx, ends - H) == 0
    ctx.run_batch(ends)
    assert warn(ctx, ends + H) == 0
    assert len(warnings(published)) == 1


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_warned_again_after_a_resumption_and_a_new_suspension(ctx, customer, catalog, published, admin_user):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    ctx.run_batch(ctx.refused)
    first = ctx.ends_at(ctx.refused) - DAY
    assert warn(ctx, first) == 1

    top_up(wallet)
    ctx.run_batch(first + H)  # it pays, and runs again
    service.refresh_from_db()
    assert (service.status, service.end_warned_at) == ("active", None)
    empty(wallet, admin_user)
    again = first + 32 * DAY  # a month on: it cannot pay
    ctx.run_batch(again)
    service.refresh_from_db()
    assert (service.status, service.suspension_causes) == ("suspended", ["unpaid"])
    assert warn(ctx, again + H) == 0  # its new clock has just started
    assert warn(ctx, ctx.ends_at(again) - DAY) == 1
    assert [event.ends_at for event in warnings(published)] == [ctx.ends_at(ctx.refused), ctx.ends_at(again)]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_no_warning_while_an_operator_holds_it_or_its_wallet_is_blocked(ctx, catalog, published):
    held = ctx.buy(funded_wallet(UserFactory(), amount=10_000))
    ctx.operate(ctx.bought + H, ctx.hold, held, "legal hold")
    frozen = funded_wallet(UserFactory(), amount=10_000)
    blocked = ctx.buy(frozen)
    wallet_status_change(wallet_id=frozen.id, status="frozen")
    unpaid_and_held = ctx.buy(funded_wallet(UserFactory(), amount=ctx.price))
    unpaid = ctx.buy(funded_wallet(UserFactory(), amount=ctx.price))
    ctx.run_batch(ctx.refused)
    ctx.operate(ctx.refused + H, ctx.hold, unpaid_and_held, "investigation")  # the clock stops
    for service, causes in [
        (held, ["operator"]),
        (blocked, ["wallet_blocked"]),
        (unpaid_and_held, ["unpaid", "operator"]),
        (unpaid, ["unpaid"]),
    ]:
        service.refresh_from_db()
        assert service.suspension_causes == causes
    assert warn(ctx, ctx.refused + 60 * DAY) == 1
    assert [event.service_id for event in warnings(published)] == [unpaid.id]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_no_warning_for_a_service_already_ended(ctx, customer, catalog, published):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    ctx.run_batch(ctx.refused)
    ctx.detail(service, ctx.refused + H, method="delete")  # the customer ends it
    assert warn(ctx, ctx.ends_at(ctx.refused) - DAY) == 0
    assert warnings(published) == []


def test_a_grace_shorter_than_the_window_warns_at_the_first_run_after_the_suspension(
    customer, catalog, published, settings
):
    settings.IAAS_SERVER_GRACE_HOURS = 12
    wallet = funded_wallet(customer, amount=CLOUD.price)
    server = CLOUD.buy(wallet)
    CLOUD.run_batch(CLOUD.refused)
    out = StringIO()
    with time_machine.travel(CLOUD.refused + dt.timedelta(minutes=10), tick=False):
        call_command("warn_service_ends", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["within"], summary["warned"]) == ("1d", {"cloud": 1, "hosting": 0, "storage": 0})
    (event,) = warnings(published)
    assert (event.service_id, event.ends_at) == (server.id, CLOUD.refused + 12 * H)


def test_every_selling_context_registers_its_sold_services():
    assert [(sold.context, sold.kind) for sold in sold_contexts()] == [
        ("cloud", "server"),
        ("hosting", "subscription"),
        ("storage", "volume"),
    ]


def test_an_operator_sees_when_the_owner_was_warned(customer, catalog):
    from django.contrib.admin import AdminSite

    from iaas.cloud.admin import ServerAdmin
    from iaas.cloud.models import Server

    server = CLOUD.buy(funded_wallet(customer, amount=CLOUD.price))
    CLOUD.run_batch(CLOUD.refused)
    pages = ServerAdmin(Server, AdminSite())
    server.refresh_from_db()
    assert "warned" not in pages.ends_at_column(server)
    warned_at = CLOUD.ends_at(CLOUD.refused) - DAY
    warn(CLOUD, warned_at)
    server.refresh_from_db()
    assert server.end_warned_at == warned_at
    assert pages.ends_at_column(server).endswith(f"(owner warned {warned_at:%Y-%m-%d %H:%M})")
