"""factory-boy factories and small builders for the suite.

Money always moves through the services (a wallet is funded by a real top-up), so a
test's starting state keeps every invariant, as a customer's would.
"""

from __future__ import annotations

import datetime as dt
import uuid

import factory
from django.contrib.auth import get_user_model
from django.db import transaction

from iaas.api import keys as api_keys
from iaas.billing import services as billing_services
from iaas.billing.models import Wallet
from iaas.contracts import billing, bus
from iaas.contracts.events import ChargesRecorded, RecordedCharge
from iaas.contracts.models import OutboxMessage


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True  # a post-generation save() would be an UPDATE

    username = factory.Sequence(lambda n: f"customer{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("correct-horse-battery")


def funded_wallet(owner=None, *, amount: int = 0, currency: str = "EUR") -> Wallet:
    """A wallet for ``owner`` (a new customer when None), topped up by ``amount``. The
    top-up reaches the customer's notifications at once (as the relay would hand it
    over), so what a test then delivers is only what the test did."""
    owner = owner or UserFactory()
    wallet = billing_services.wallet_create(owner_id=owner.id, currency=currency)
    if amount:
        top_up = billing_services.top_up_create(wallet_id=wallet.id, owner_id=owner.id, amount=amount)
        tell_customer(OutboxMessage.objects.filter(payload__top_up_id=str(top_up.id)))
    wallet.refresh_from_db()
    return wallet


def tell_customer(rows) -> int:
    """Apply the pending outbox ``rows`` of the customers' notifications now, each once
    under its inbox record, and mark them done: what the relay and a worker do."""
    rows = list(rows.filter(status=OutboxMessage.Status.PENDING, handler__startswith="notifications."))
    for row in rows:
        bus.consume_relayed(
            row.handler, event_type=row.event_type, event_id=str(row.event_id), payload=row.payload
        )
    return bus.relay_done([row.pk for row in rows])


def api_key_for(user, *, scope: str = "read_write", name: str = "test", **fields) -> str:
    """A new API key of ``user`` (the key itself, to send as ``Authorization: Token``)."""
    return api_keys.api_key_create(owner_id=user.pk, name=name, scope=scope, **fields).key


def record_charges(
    wallet: Wallet,
    amounts: list[int],
    *,
    context: str = "cloud",
    start: dt.datetime | None = None,
    step: dt.timedelta = dt.timedelta(days=1),
    subject_id: uuid.UUID | None = None,
    description: str = "Server vm: usage",
) -> ChargesRecorded:
    """Billing's side of a selling context's settlement run for one wallet: reserve the
    charges' total (as the context's spending did) and publish them as one
    ChargesRecorded, one charge per ``step`` from ``start`` (each dated at its period's
    end), for ``subject_id`` (None: charges of no service). No context's records stand
    behind them, so only Billing's invariants hold (I4 compares with the context)."""
    start = start or dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    with transaction.atomic():
        billing.reserve(
            wallet_id=wallet.id,
            owner_id=wallet.owner_id,
            context=context,
            currency=wallet.currency,
            amount=sum(amounts),
            minimum=sum(amounts),
        )
        event = ChargesRecorded(
            wallet_id=wallet.id,
            context=context,
            currency=wallet.currency,
            amount=sum(amounts),
            charges=tuple(
                RecordedCharge(
                    charge_id=uuid.uuid4(),
                    amount=amount,
                    transaction_date=start + (n + 1) * step,
                    description=f"{description} {n + 1}",
                    subject_id=subject_id,
                    period_start=start + n * step,
                    period_end=start + (n + 1) * step,
                )
                for n, amount in enumerate(amounts)
            ),
        )
        bus.publish(event)
    return event


def billing_consistent() -> None:
    """Billing's own invariants, deep (for tests whose charges no context recorded)."""
    found = billing.check_invariants(deep=True)
    assert not any(found.values()), found


def usage_accrued(server, *, hours: int, now=None) -> int:
    """``hours`` more of a server's usage from its ``paid_until``, accrued as a metering
    step does (priced under the monthly cap, spent out of Cloud's allowance, added to
    the month's usage record, ``paid_until`` moved) and not settled: the state between
    an hourly run and the settlement run, built from the spending kit alone, not from a
    batch. Returns the amount spent."""
    import datetime as dt

    from django.db import transaction
    from django.utils import timezone

    from iaas.cloud.models import Server
    from iaas.cloud.spending import servers

    now = now or timezone.now()
    with transaction.atomic():
        server = Server.objects.select_for_update(no_key=True).get(pk=server.pk)
        start = server.paid_until
        amount = servers.accrue(server, start=start, hours=hours, now=now)
        Server.objects.filter(pk=server.pk).update(paid_until=start + hours * dt.timedelta(hours=1))
    return amount
