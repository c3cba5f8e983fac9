"""Reading top-ups back (selectors): a customer finds their wallet's top-ups, newest
first, and no one else's, by wallet as well as by owner."""

import pytest

from iaas.billing import selectors, services
from iaas.contracts.errors import NotFound
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db


def test_a_wallets_top_ups_newest_first(customer, settings):
    wallet = funded_wallet(customer, amount=1_000)
    settings.IAAS_PAYMENT_PROVIDER = "iaas.billing.payments.ManualPaymentProvider"
    waiting = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=300)
    listed = selectors.top_up_list(owner_id=customer.id, wallet_id=wallet.id)
    assert [(t.amount, t.status, t.provider) for t in listed] == [
        (300, "pending", "manual"),
        (1_000, "succeeded", "sandbox"),
    ]
    assert selectors.top_up_get(owner_id=customer.id, wallet_id=wallet.id, top_up_id=waiting.id) == waiting


def test_another_customers_wallet_and_top_ups_are_not_found(customer, other_customer):
    theirs = funded_wallet(other_customer, amount=500)
    [their_top_up] = selectors.top_up_list(owner_id=other_customer.id, wallet_id=theirs.id)
    with pytest.raises(NotFound):
        selectors.top_up_list(owner_id=customer.id, wallet_id=theirs.id)
    with pytest.raises(NotFound):
        selectors.top_up_get(owner_id=customer.id, wallet_id=theirs.id, top_up_id=their_top_up.id)


def test_a_top_up_is_found_only_under_its_own_wallet(customer):
    euros = funded_wallet(customer, amount=500)
    dollars = funded_wallet(customer, amount=700, currency="USD")
    [dollar_top_up] = selectors.top_up_list(owner_id=customer.id, wallet_id=dollars.id)
    with pytest.raises(NotFound):
        selectors.top_up_get(owner_id=customer.id, wallet_id=euros.id, top_up_id=dollar_top_up.id)
    assert [t.amount for t in selectors.top_up_list(owner_id=customer.id, wallet_id=euros.id)] == [500]
