"""A wallet's status changes are in its history: one record per change, with the
operator (or none, for a run) and the reason; a call that changes nothing records
nothing."""

from __future__ import annotations

import pytest

from iaas.audit.models import ChangeRecord
from iaas.billing import services
from iaas.contracts.errors import InvalidState
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def history(wallet):
    return list(
        ChangeRecord.objects.filter(obj_type="billing.wallet", obj_id=str(wallet.id))
        .order_by("id")
        .values_list("action", "before", "after", "actor_id", "reason")
    )


def test_freeze_unfreeze_and_close_are_recorded_once_each(wallet):
    operator = UserFactory(username="fiona")
    services.wallet_set_status(
        wallet_id=wallet.id, status="frozen", actor_id=operator.id, reason="chargeback"
    )
    services.wallet_set_status(wallet_id=wallet.id, status="frozen", actor_id=operator.id)  # no change
    services.wallet_set_status(wallet_id=wallet.id, status="active", actor_id=operator.id)
    services.wallet_set_status(wallet_id=wallet.id, status="closed")

    assert history(wallet) == [
        ("freeze", {"status": "active"}, {"status": "frozen"}, operator.id, "chargeback"),
        ("unfreeze", {"status": "frozen"}, {"status": "active"}, operator.id, ""),
        ("close", {"status": "active"}, {"status": "closed"}, None, ""),
    ]


def test_a_refused_change_records_nothing(wallet):
    services.wallet_set_status(wallet_id=wallet.id, status="closed")
    with pytest.raises(InvalidState):
        services.wallet_set_status(wallet_id=wallet.id, status="active")
    assert [action for action, *_ in history(wallet)] == ["close"]
