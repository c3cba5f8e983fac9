"""Saved payment methods (iaas.billing.payments.methods): the pending method is committed
before the provider is asked, the provider is asked outside any transaction, a card saved
at once (the sandbox) is active at once, one completed in the customer's browser becomes
active when the provider's webhook says so, and removing one takes it out of every
automatic top-up under the wallets' locks before the card is detached."""

from __future__ import annotations

import uuid

import pytest

from iaas.billing import selectors
from iaas.billing.models import AutoTopUp, PaymentMethod, Wallet
from iaas.billing.payments import SetupOutcome, auto, methods
from iaas.contracts.errors import NotFound, PaymentMethodsUnavailable, PaymentProviderUnavailable
from tests.billing.payment_doubles import ScriptedProvider
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db


def a_stripe_like_setup(method_id, *, reference: str = "seti_123") -> SetupOutcome:
    """What a provider that completes the setup in the customer's browser answers."""
    return SetupOutcome(setup_reference=reference, client_secret=f"{reference}_secret_abc")


def setup_intent(method: PaymentMethod, *, payment_method="pm_saved", **fields) -> dict:
    """A SetupIntent as Stripe's webhook carries it (the parts we read)."""
    return {
        "id": method.setup_reference or "seti_unknown",
        "object": "setup_intent",
        "payment_method": payment_method,
        "metadata": {"payment_method_id": str(method.id)},
        **fields,
    }


class StripeNamedProvider(ScriptedProvider):
    """The scripted provider under Stripe's name: the webhook's functions look for Stripe's
    methods."""

    name = "stripe"


@pytest.fixture
def stripe_named(settings, scripted):
    settings.IAAS_PAYMENT_PROVIDER = f"{__name__}.StripeNamedProvider"
    return scripted


# --- Saving a card -----------------------------------------------------------------------------


def test_the_sandbox_saves_a_card_at_once(customer):
    started = methods.payment_method_start(owner_id=customer.id)
    method = started.method
    assert (method.status, method.provider, method.brand, method.last4) == (
        "active",
        "sandbox",
        "visa",
        "4242",
    )
    assert (method.exp_month, method.exp_year) == (12, 2099)
    assert method.setup_reference == f"sandbox-setup-{method.id}"
    assert method.provider_method_id == f"sandbox-card-{method.id}"
    assert method.activated_at is not None
    assert started.client_secret is None  # nothing for the browser to complete


def test_the_provider_is_asked_after_the_pending_method_is_committed(customer, scripted):
    started = methods.payment_method_start(owner_id=customer.id)
    [call] = scripted.of("setup_start")
    assert call.subject == started.method.id  # the row existed before the provider was asked
    assert scripted.inside_a_transaction() == []
    assert started.method.status == "active"


def test_a_setup_the_browser_completes_stays_pending_with_its_client_secret(customer, scripted):
    scripted.setups.append(a_stripe_like_setup(None))
    started = methods.payment_method_start(owner_id=customer.id)
    assert (started.method.status, started.method.setup_reference) == ("pending", "seti_123")
    assert started.client_secret == "seti_123_secret_abc"
    assert started.method.provider_method_id == ""


def test_an_unreachable_provider_leaves_the_pending_method_for_the_retry(customer, scripted):
    scripted.setups.append(PaymentProviderUnavailable())
    with pytest.raises(PaymentProviderUnavailable):
        methods.payment_method_start(owner_id=customer.id)
    [method] = PaymentMethod.objects.filter(owner=customer)
    assert (method.status, method.setup_reference) == ("pending", "")
    # The retry (the same Idempotency-Key replays the opened method) carries on with it.
    retried = methods.payment_method_setup(method_id=method.id)
    assert (retried.method.pk, retried.method.status) == (method.pk, "active")
    assert PaymentMethod.objects.filter(owner=customer).count() == 1


def test_asking_again_for_a_method_no_longer_pending_asks_the_provider_nothing(customer, scripted):
    method = methods.payment_method_start(owner_id=customer.id).method
    again = methods.payment_method_setup(method_id=method.id)
    assert again.method.status == "active"
    assert len(scripted.of("setup_start")) == 1


def test_the_manual_provider_keeps_no_cards_and_nothing_is_committed(customer, settings):
    settings.IAAS_PAYMENT_PROVIDER = "manual"
    with pytest.raises(PaymentMethodsUnavailable):
        methods.payment_method_start(owner_id=customer.id)
    assert not PaymentMethod.objects.exists()


def test_a_provider_that_refuses_to_save_cards_fails_the_method_saying_why(customer, scripted):
    scripted.setups.append(PaymentMethodsUnavailable("This provider keeps no cards."))
    with pytest.raises(PaymentMethodsUnavailable):
        methods.payment_method_start(owner_id=customer.id)
    method = PaymentMethod.objects.get(owner=customer)
    assert (method.status, method.failure_message) == ("failed", "This provider keeps no cards.")


# --- The provider's webhook (Stripe's setup_intent.*) ------------------------------------------------


def test_a_succeeded_setup_makes_the_method_active(customer, stripe_named):
    script = stripe_named
    script.setups.append(a_stripe_like_setup(None))
    method = methods.payment_method_start(owner_id=customer.id).method
    assert methods.setup_succeeded(setup_intent(method, payment_method="pm_1")) == "method_active"
    method.refresh_from_db()
    assert (method.status, method.provider_method_id, method.brand) == ("active", "pm_1", "")
    assert method.activated_at is not None
    # Told twice: nothing more.
    assert methods.setup_succeeded(setup_intent(method, payment_method="pm_1")) == "method_active_already"


def test_a_succeeded_setup_carrying_the_card_records_its_details(customer, stripe_named):
    script = stripe_named
    script.setups.append(a_stripe_like_setup(None))
    method = methods.payment_method_start(owner_id=customer.id).method
    expanded = {"id": "pm_2", "card": {"brand": "amex", "last4": "0005", "exp_month": 3, "exp_year": 2030}}
    assert methods.setup_succeeded(setup_intent(method, payment_method=expanded)) == "method_active"
    method.refresh_from_db()
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == ("amex", "0005", 3, 2030)


def test_a_setup_is_found_by_its_metadata_before_its_reference_is_recorded(customer, stripe_named):
    """The webhook may come before our own record of the SetupIntent's id (a slow answer)."""
    script = stripe_named
    script.setups.append(PaymentProviderUnavailable())
    with pytest.raises(PaymentProviderUnavailable):
        methods.payment_method_start(owner_id=customer.id)
    method = PaymentMethod.objects.get(owner=customer)
    event = {**setup_intent(method, payment_method="pm_3"), "id": "seti_late"}
    assert methods.setup_succeeded(event) == "method_active"
    method.refresh_from_db()
    assert (method.status, method.setup_reference) == ("active", "seti_late")


def test_a_setup_of_no_method_of_ours_is_unmatched(stripe_named):
    event = {"id": "seti_x", "payment_method": "pm_x", "metadata": {"payment_method_id": "not-a-uuid"}}
    assert methods.setup_succeeded(event) == "unmatched"
    assert methods.setup_failed(event) == "unmatched"
    assert methods.setup_canceled({"id": "seti_y", "metadata": {"payment_method_id": str(uuid.uuid4())}}) == (
        "unmatched"
    )


def test_a_failed_attempt_leaves_the_method_pending_with_the_providers_words(customer, stripe_named):
    script = stripe_named
    script.setups.append(a_stripe_like_setup(None))
    method = methods.payment_method_start(owner_id=customer.id).method
    event = setup_intent(
        method, last_setup_error={"code": "card_declined", "message": "Your card was declined."}
    )
    assert methods.setup_failed(event) == "attempt_failed"
    method.refresh_from_db()
    assert (method.status, method.failure_message) == ("pending", "Your card was declined.")
    # The customer tries another card with the same setup, which succeeds.
    assert methods.setup_succeeded(setup_intent(method, payment_method="pm_4")) == "method_active"
    method.refresh_from_db()
    assert (method.status, method.failure_message) == ("active", "")


def test_a_cancelled_setup_fails_a_pending_method_only(customer, stripe_named):
    script = stripe_named
    script.setups += [
        a_stripe_like_setup(None, reference="seti_a"),
        a_stripe_like_setup(None, reference="seti_b"),
    ]
    pending = methods.payment_method_start(owner_id=customer.id).method
    active = methods.payment_method_start(owner_id=customer.id).method
    methods.setup_succeeded(setup_intent(active, payment_method="pm_5"))
    assert methods.setup_canceled(setup_intent(pending)) == "method_failed"
    assert methods.setup_canceled(setup_intent(active)) == "ignored"
    pending.refresh_from_db()
    active.refresh_from_db()
    assert (pending.status, pending.failure_message) == ("failed", "The card setup was cancelled.")
    assert active.status == "active"


# --- Removing one ----------------------------------------------------------------------------------


def test_removing_a_method_detaches_it_at_the_provider(customer, scripted):
    method = methods.payment_method_start(owner_id=customer.id).method
    removed = methods.payment_method_remove(owner_id=customer.id, method_id=method.id)
    assert removed.status == "removed"
    assert removed.removed_at is not None
    [call] = scripted.of("method_remove")
    assert call.subject == method.id
    assert scripted.inside_a_transaction() == []
    # Again: the detach is tried again, nothing else changes.
    methods.payment_method_remove(owner_id=customer.id, method_id=method.id)
    assert len(scripted.of("method_remove")) == 2
    method.refresh_from_db()
    assert method.removed_at == removed.removed_at


def test_another_customers_method_or_a_missing_one_is_not_found(customer, other_customer, scripted):
    method = methods.payment_method_start(owner_id=customer.id).method
    for owner_id, method_id in ((other_customer.id, method.id), (customer.id, uuid.uuid4())):
        with pytest.raises(NotFound):
            methods.payment_method_remove(owner_id=owner_id, method_id=method_id)
    method.refresh_from_db()
    assert method.status == "active"
    assert scripted.of("method_remove") == []


def test_removing_a_method_ends_the_automatic_top_ups_that_use_it(customer):
    method = methods.payment_method_start(owner_id=customer.id).method
    spare = methods.payment_method_start(owner_id=customer.id).method
    eur = funded_wallet(customer, amount=10_000)
    usd = funded_wallet(customer, amount=10_000, currency="USD")
    gbp = funded_wallet(customer, amount=10_000, currency="GBP")
    for wallet, card in ((eur, method), (usd, method), (gbp, spare)):
        auto.auto_top_up_set(
            wallet_id=wallet.id,
            owner_id=customer.id,
            threshold=1_000,
            amount=5_000,
            payment_method_id=card.id,
        )
    methods.payment_method_remove(owner_id=customer.id, method_id=method.id)
    assert list(AutoTopUp.objects.values_list("wallet_id", flat=True)) == [gbp.id]
    thresholds = dict(Wallet.objects.values_list("id", "auto_top_up_below"))
    assert thresholds == {eur.id: None, usd.id: None, gbp.id: 1_000}


def test_a_setup_completed_after_the_method_was_removed_keeps_no_usable_card(customer, stripe_named):
    script = stripe_named
    script.setups.append(a_stripe_like_setup(None))
    method = methods.payment_method_start(owner_id=customer.id).method
    methods.payment_method_remove(owner_id=customer.id, method_id=method.id)
    assert methods.setup_succeeded(setup_intent(method, payment_method="pm_late")) == "method_removed"
    method.refresh_from_db()
    assert (method.status, method.provider_method_id) == ("removed", "pm_late")  # for the detach


# --- Reading them ------------------------------------------------------------------------------------


def test_a_customer_lists_their_own_methods_newest_first(customer, other_customer):
    first = methods.payment_method_start(owner_id=customer.id).method
    second = methods.payment_method_start(owner_id=customer.id).method
    methods.payment_method_start(owner_id=other_customer.id)
    assert list(selectors.payment_method_list(owner_id=customer.id)) == [second, first]
    assert selectors.payment_method_get(owner_id=customer.id, method_id=first.id) == first
    with pytest.raises(NotFound):
        selectors.payment_method_get(owner_id=other_customer.id, method_id=first.id)
