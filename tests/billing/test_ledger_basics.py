"""The locked-ledger basics (``iaas.billing.ledger``) each keep the books whole on a
wallet the caller has locked: an entry chains on the last one (I9) and moves the
balance (I1), a hold and ``reserved`` move together (I3), a release is applied once."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, transaction

from iaas.billing import ledger
from iaas.billing.locks import wallet_lock
from iaas.billing.models import Hold, LedgerEntry, Reservation
from iaas.contracts import statements
from tests.factories import billing_consistent

pytestmark = pytest.mark.django_db


def test_an_entry_booked_chains_on_the_last_one_and_moves_the_balance(wallet):
    last = LedgerEntry.objects.filter(wallet=wallet).order_by("-sequence").first()
    with transaction.atomic():
        locked = wallet_lock(wallet.id)
        entry = ledger.entry_book(
            locked, kind=LedgerEntry.Kind.ADJUSTMENT, amount=-250, reference="test:1", description="x" * 300
        )
    wallet.refresh_from_db()
    assert (entry.sequence, entry.balance_after) == (last.sequence + 1, last.balance_after - 250)
    assert (wallet.ledger_sequence, wallet.balance) == (entry.sequence, entry.balance_after)
    assert len(entry.description) == 255
    billing_consistent()


def test_a_hold_grows_and_shrinks_with_reserved(wallet):
    with transaction.atomic():
        locked = wallet_lock(wallet.id)
        locked.reserved += 700
        ledger.wallet_money_save(locked)
        statements.run_together(ledger.hold_grow_write(wallet_id=locked.id, context="cloud", amount=700))
        ledger.reservation_record(wallet=locked, context="cloud", kind=Reservation.Kind.GRANT, amount=700)
        locked.reserved -= 300
        ledger.wallet_money_save(locked)
        ledger.hold_shrink(wallet_id=locked.id, context="cloud", amount=300, kind=Reservation.Kind.RELEASE)
    hold = Hold.objects.get(wallet=wallet, context="cloud")
    assert (hold.amount, hold.granted_total, hold.released_total) == (400, 700, 300)


def test_a_hold_that_does_not_exist_cannot_shrink_and_amounts_are_positive(wallet):
    with transaction.atomic(), pytest.raises(IntegrityError, match="no hosting hold"):
        ledger.hold_shrink(wallet_id=wallet.id, context="hosting", amount=1, kind=Reservation.Kind.RELEASE)
    with pytest.raises(ValueError, match="positive grant"):
        ledger.hold_grow_write(wallet_id=wallet.id, context="cloud", amount=0)
    with pytest.raises(ValueError, match="positive capture or release"):
        ledger.hold_shrink(wallet_id=wallet.id, context="cloud", amount=0, kind=Reservation.Kind.RELEASE)


def test_a_release_is_applied_once_by_its_marker(wallet):
    release_id = uuid.uuid4()
    assert not ledger.reservation_applied(kind=Reservation.Kind.RELEASE, source_id=release_id)
    with transaction.atomic():
        locked = wallet_lock(wallet.id)
        ledger.reservation_record(
            wallet=locked, context="cloud", kind=Reservation.Kind.RELEASE, amount=5, source_id=release_id
        )
    assert ledger.reservation_applied(kind=Reservation.Kind.RELEASE, source_id=release_id)
    assert ledger.charges_applied([uuid.uuid4()]) == set()
