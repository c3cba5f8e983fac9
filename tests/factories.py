"""factory-boy factories and small builders for the suite.

Money always moves through the services (a wallet is funded by a real top-up), so a
test's starting state keeps every invariant, as a customer's would.
"""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from iaas.api import keys as api_keys
from iaas.billing import services as billing_services
from iaas.billing.models import Wallet


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True  # a post-generation save() would be an UPDATE

    username = factory.Sequence(lambda n: f"customer{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("correct-horse-battery")


def funded_wallet(owner=None, *, amount: int = 0, currency: str = "EUR") -> Wallet:
    """A wallet for ``owner`` (a new customer when None), topped up by ``amount``."""
    owner = owner or UserFactory()
    wallet = billing_services.wallet_create(owner_id=owner.id, currency=currency)
    if amount:
        billing_services.top_up_create(wallet_id=wallet.id, owner_id=owner.id, amount=amount)
    wallet.refresh_from_db()
    return wallet


def api_key_for(user, *, scope: str = "read_write", name: str = "test", **fields) -> str:
    """A new API key of ``user`` (the key itself, to send as ``Authorization: Token``)."""
    return api_keys.api_key_create(owner_id=user.pk, name=name, scope=scope, **fields).key
