"""Delivered outbox rows are purged after a retention period (IAAS_OUTBOX_RETENTION_DAYS),
in bounded batches; a pending or failed row is never deleted, however old (it is an
event some handler has still to apply)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from iaas.common.cli import EXIT_REFUSED
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 30, 12, 0, tzinfo=dt.UTC)
Status = OutboxMessage.Status


def row(status: str, age: dt.timedelta) -> OutboxMessage:
    at = NOW - age
    return OutboxMessage.objects.create(
        event_id=uuid.uuid4(),
        event_type="ChargeRecorded",
        handler="billing.settle_charge",
        payload={},
        status=status,
        created_at=at - dt.timedelta(seconds=1),
        available_at=at,
        delivered_at=at if status == Status.DONE else None,
    )


@pytest.fixture
def outbox(time_machine):
    """Delivered rows 30, 15 and 13 days old; a pending and a failed row 60 days old."""
    time_machine.move_to(NOW, tick=False)
    return {
        "old": [row(Status.DONE, dt.timedelta(days=30)), row(Status.DONE, dt.timedelta(days=15))],
        "recent": row(Status.DONE, dt.timedelta(days=13)),
        "pending": row(Status.PENDING, dt.timedelta(days=60)),
        "failed": row(Status.FAILED, dt.timedelta(days=60)),
    }


def remaining() -> set[int]:
    return set(OutboxMessage.objects.values_list("pk", flat=True))


def test_delivered_rows_past_the_retention_are_deleted_and_nothing_else(outbox):
    assert bus.purge_delivered(older_than=dt.timedelta(days=14)) == 2
    assert remaining() == {outbox["recent"].pk, outbox["pending"].pk, outbox["failed"].pk}
    assert bus.purge_delivered(older_than=dt.timedelta(days=14)) == 0


def test_the_purge_deletes_in_bounded_batches(outbox):
    for _ in range(3):
        row(Status.DONE, dt.timedelta(days=20))
    with CaptureQueriesContext(connection) as queries:
        assert bus.purge_delivered(older_than=dt.timedelta(days=14), batch_size=2) == 5
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1 rows
    assert all("LIMIT 2" in sql for sql in deletes)


def test_a_pending_or_failed_row_is_never_purged_however_old(outbox):
    bus.purge_delivered(older_than=dt.timedelta(seconds=1))
    assert remaining() == {outbox["pending"].pk, outbox["failed"].pk}


def purge(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("purge_outbox", *args, stdout=out, stderr=StringIO())
    except SystemExit as exit_:
        return exit_.code, out.getvalue()
    return 0, out.getvalue()


def test_the_command_uses_the_retention_setting(outbox, settings):
    settings.IAAS_OUTBOX_RETENTION_DAYS = 14
    code, out = purge("--json")
    assert code == 0
    assert json.loads(out) == {
        "cutoff": "2026-06-16T12:00:00+00:00",
        "deleted": 2,
        "dry_run": False,
        "older_than": "14d",
    }
    assert outbox["recent"].pk in remaining()


def test_the_command_dry_run_counts_and_deletes_nothing(outbox):
    before = remaining()
    code, out = purge("--older-than", "10d", "--dry-run")
    assert code == 0
    assert "3 delivered outbox row(s) older than 10d would be deleted (dry run)" in out
    assert remaining() == before


def test_the_command_dry_run_in_json(outbox):
    code, out = purge("--older-than", "10d", "--dry-run", "--json")
    assert (code, json.loads(out)["would_delete"], json.loads(out)["dry_run"]) == (0, 3, True)
    assert len(remaining()) == 5


def test_the_command_deletes_with_an_explicit_retention_and_batch_size(outbox):
    code, out = purge("--older-than", "10d", "--batch-size", "1")
    assert code == 0
    assert "3 delivered outbox row(s) older than 10d deleted" in out
    assert remaining() == {outbox["pending"].pk, outbox["failed"].pk}


@pytest.mark.parametrize("args", [["--older-than", "soon"], ["--older-than", "0s"], ["--batch-size", "0"]])
def test_the_command_refuses_bad_arguments_and_deletes_nothing(outbox, args):
    before = remaining()
    with pytest.raises(CommandError) as refused:
        call_command("purge_outbox", *args, stdout=StringIO())
    assert refused.value.returncode == EXIT_REFUSED
    assert remaining() == before


def test_the_retention_setting_comes_from_the_environment(monkeypatch):
    from iaas.settings.base import outbox_retention_days

    monkeypatch.delenv("IAAS_OUTBOX_RETENTION_DAYS", raising=False)
    assert outbox_retention_days() == 14
    monkeypatch.setenv("IAAS_OUTBOX_RETENTION_DAYS", "30")
    assert outbox_retention_days() == 30
    monkeypatch.setenv("IAAS_OUTBOX_RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="IAAS_OUTBOX_RETENTION_DAYS"):
        outbox_retention_days()
