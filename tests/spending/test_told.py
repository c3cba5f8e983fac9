"""A selling context's lifecycle events own what its customer is told (iaas.spending.sold):
whose service it is, and the service exactly as its API detail shows it once the change
is made (status, causes, when it ends unpaid, the month's usage), whichever path made
the change: the batch run, the per-item path it falls back to, an operator, the
customer. Every context alike."""

from __future__ import annotations

import datetime as dt

import pytest

from iaas.contracts.events import Event
from tests.factories import funded_wallet

from .contexts import CONTEXTS, moment, top_up

pytestmark = pytest.mark.django_db

H = dt.timedelta(hours=1)
ENDED = {"terminated", "cancelled", "deleted"}


def only(published: list, event_type: type) -> Event:
    found = [event for event in published if isinstance(event, event_type)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_the_batch_run_tells_a_suspension_and_the_end_as_the_api_shows_them(
    ctx, customer, catalog, published
):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    suspended, _, ended = ctx.events

    ctx.run_batch(ctx.refused)
    event = only(published, suspended)
    assert (event.owner_id, event.cause) == (customer.pk, "unpaid")
    assert event.resource == ctx.detail(service, ctx.refused)
    assert (event.resource["status"], event.resource["suspension_causes"]) == ("suspended", ["unpaid"])
    # Told at once when it will end unless paid.
    assert moment(event.resource[ctx.ends_field]) == ctx.ends_at(ctx.refused)

    ends = ctx.ends_at(ctx.refused)
    ctx.run_batch(ends)
    event = only(published, ended)
    assert (event.owner_id, event.reason) == (customer.pk, "unpaid")
    assert event.resource == ctx.detail(service, ends)
    assert event.resource["status"] in ENDED


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_the_batch_run_tells_a_resumption_with_what_it_charged(ctx, customer, catalog, published):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    ctx.run_batch(ctx.refused)
    top_up(wallet)
    paid = ctx.refused + 3 * H
    ctx.run_batch(paid)
    event = only(published, ctx.events[1])
    assert event.owner_id == customer.pk
    # The month's usage includes what the resumption charged (read in the batch's own
    # statements), as the API shows it.
    assert event.resource == ctx.detail(service, paid)
    assert (event.resource["status"], event.resource["suspension_causes"]) == ("active", [])


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_the_per_item_path_tells_a_suspension_and_the_end_past_grace(ctx, customer, catalog, published):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    suspended, _, ended = ctx.events
    ctx.run_one(service, ctx.refused)
    event = only(published, suspended)
    assert event.owner_id == customer.pk
    assert event.resource == ctx.detail(service, ctx.refused)
    assert moment(event.resource[ctx.ends_field]) == ctx.ends_at(ctx.refused)

    ends = ctx.ends_at(ctx.refused)
    ctx.run_one(service, ends)
    event = only(published, ended)
    assert event.resource == ctx.detail(service, ends)
    assert (event.owner_id, event.resource["status"] in ENDED) == (customer.pk, True)


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_the_per_item_path_tells_a_resumption_and_the_customer_s_end(ctx, customer, catalog, published):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    _, resumed, ended = ctx.events
    ctx.run_one(service, ctx.refused)
    top_up(wallet)
    paid = ctx.refused + 3 * H
    ctx.run_one(service, paid)
    event = only(published, resumed)
    assert (event.owner_id, event.resource) == (customer.pk, ctx.detail(service, paid))

    gone = paid + H
    answer = ctx.detail(service, gone, method="delete")
    event = only(published, ended)
    assert (event.owner_id, event.reason) == (customer.pk, "customer")
    assert event.resource == answer == ctx.detail(service, gone)
    assert event.resource["status"] in ENDED


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_an_operator_s_hold_and_its_lifting_are_told(ctx, customer, wallet, catalog, published):
    service = ctx.buy(wallet)
    suspended, resumed, _ = ctx.events
    held = ctx.bought + dt.timedelta(minutes=30)
    ctx.operate(held, ctx.hold, service, "abuse report")
    event = only(published, suspended)
    assert (event.owner_id, event.cause, event.reason) == (customer.pk, "operator", "abuse report")
    assert event.resource == ctx.detail(service, held)
    assert event.resource[ctx.ends_field] is None  # no clock runs while an operator holds it

    lifted = held + 2 * H
    ctx.operate(lifted, ctx.lift, service)
    event = only(published, resumed)
    assert (event.owner_id, event.resource) == (customer.pk, ctx.detail(service, lifted))
