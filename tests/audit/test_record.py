"""The history's own rules: one record per call, many with one INSERT, only inside the
transaction that makes the change, and never updated or deleted (the database refuses)."""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from iaas.audit.models import ChangeRecord
from iaas.audit.selectors import changes_of
from iaas.audit.services import Change, changed_fields, object_type, record_change, record_changes
from iaas.billing.models import Wallet
from iaas.contracts.errors import InvalidState

pytestmark = pytest.mark.django_db


def test_record_change_keeps_who_what_before_and_after(customer):
    wallet_id = uuid.uuid4()
    with transaction.atomic():
        record = record_change(
            obj_type="billing.wallet",
            obj_id=wallet_id,
            action="freeze",
            before={"status": "active"},
            after={"status": "frozen"},
            actor_id=customer.pk,
            reason="chargeback",
        )

    stored = ChangeRecord.objects.get()
    assert stored.pk == record.pk
    assert (stored.obj_type, stored.obj_id, stored.action) == ("billing.wallet", str(wallet_id), "freeze")
    assert (stored.before, stored.after) == ({"status": "active"}, {"status": "frozen"})
    assert (stored.actor, stored.reason) == (customer, "chargeback")
    assert stored.who == customer.get_username()
    assert list(changes_of(obj_type="billing.wallet", obj_id=wallet_id)) == [stored]


def test_record_changes_writes_a_batch_with_one_insert():
    ids = [uuid.uuid4() for _ in range(3)]
    rows = [
        Change(
            obj_type="cloud.server",
            obj_id=server_id,
            action="suspend",
            before={"status": "active"},
            after={"status": "suspended"},
            actor_label="bill_usage",
            reason="insufficient_funds",
        )
        for server_id in ids
    ]
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        record_changes(rows)

    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    stored = ChangeRecord.objects.order_by("id")
    assert [r.obj_id for r in stored] == [str(i) for i in ids]
    assert {(r.actor_id, r.who, r.reason) for r in stored} == {(None, "bill_usage", "insufficient_funds")}


def test_an_empty_batch_writes_nothing():
    with CaptureQueriesContext(connection) as queries:
        assert record_changes([]) == []
    assert queries.captured_queries == []


def test_bad_rows_are_refused_before_anything_is_written():
    with transaction.atomic(), pytest.raises(ValueError, match=r"app_label\.model"):
        record_changes([Change(obj_type="server", obj_id=1, action="suspend")])
    with transaction.atomic(), pytest.raises(ValueError, match="action"):
        record_change(obj_type="cloud.server", obj_id=1, action="", before={}, after={})
    assert not ChangeRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_change_is_recorded_only_inside_its_transaction():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        record_change(obj_type="cloud.server", obj_id=1, action="suspend", before={}, after={})
    with pytest.raises(RuntimeError, match="inside the transaction"):
        record_changes([Change(obj_type="cloud.server", obj_id=1, action="suspend")])
    assert not ChangeRecord.objects.exists()


def test_a_record_rolls_back_with_its_change():
    def change_that_fails_after_recording():
        with transaction.atomic():
            record_change(obj_type="cloud.server", obj_id=1, action="suspend", before={}, after={})
            raise InvalidState("refused after all")

    with pytest.raises(InvalidState):
        change_that_fails_after_recording()
    assert not ChangeRecord.objects.exists()


def test_the_history_is_append_only_in_the_database():
    assert connection.vendor == "postgresql"
    with transaction.atomic():
        record = record_change(obj_type="cloud.server", obj_id=1, action="suspend", before={}, after={})
    for statement in (
        "UPDATE audit_changerecord SET action = 'resume' WHERE id = %s",
        "DELETE FROM audit_changerecord WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [record.pk])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        ChangeRecord.objects.filter(pk=record.pk).update(reason="edited")
    assert ChangeRecord.objects.get(pk=record.pk).action == "suspend"


def test_helpers_name_objects_and_trim_snapshots():
    assert object_type(Wallet) == "billing.wallet"
    before, after = changed_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
    assert (before, after) == ({"b": 2, "c": None}, {"b": 3, "c": 4})
