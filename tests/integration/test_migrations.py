"""Data migrations that carry existing rows into a new shape."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(app: str, name: str | None = None):
    """Migrate ``app`` to ``name``; without a name, every app to its latest migration
    (the schema the rest of the suite expects). Returns the historical apps."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    targets = [(app, name)] if name else executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.parametrize(
    ("app", "before", "model", "fields"),
    [
        (
            "cloud",
            "0002_catalog",
            "server",
            {"name": "web1", "plan_id": "s-1vcpu-1gb"},
        ),
        (
            "hosting",
            "0003_subscription_period_anchor",
            "subscription",
            {"domain": "example.com", "plan_id": "web-starter"},
        ),
    ],
)
def test_services_suspended_before_causes_existed_are_unpaid_since_they_stopped(
    catalog, app, before, model, fields
):
    """Before the causes were recorded only the batch runs suspended (for non-payment)."""
    owner = UserFactory()
    stopped = dt.datetime(2026, 5, 10, 12, tzinfo=dt.UTC)
    try:
        old_apps = migrate(app, before)
        Model = old_apps.get_model(app, model)
        period = {"paid_until": stopped} if app == "cloud" else {"current_period_end": stopped}
        suspended = Model.objects.create(
            owner_id=owner.id,
            wallet_id=uuid.uuid4(),
            status="suspended",
            suspended_at=stopped,
            **fields,
            **period,
        )
        active = Model.objects.create(
            owner_id=owner.id,
            wallet_id=uuid.uuid4(),
            status="active",
            **{**fields, "domain": "b.example"} if app == "hosting" else fields,
            **period,
        )
    finally:
        new_apps = migrate(app)
    Model = new_apps.get_model(app, model)
    assert Model.objects.get(pk=suspended.pk).unpaid_since == stopped
    assert Model.objects.get(pk=active.pk).unpaid_since is None
