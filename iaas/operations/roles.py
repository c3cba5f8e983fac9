"""The operator roles, as Django groups. Superusers may do everything; the groups
carry model permissions, which the admin checks on the server for every page and action.

- Support: view everything (every model of the contexts, the outbox, the history of
  changes, and customers); change nothing.
- Finance: what Support sees, plus balance adjustments (``billing.make_adjustment``),
  refunds of settled charges (``billing.make_refund``), marking parked card payments
  resolved (``billing.change_parkedpayment``: the admin changes nothing else of them),
  retrying event deliveries (``contracts.retry_outboxmessage``) and retrying or
  discarding dead-lettered tasks (``operations.retry_deadletter``).

Server and subscription operations, top-up confirmation and catalog edits need the
model's change permission (superusers, or a group an administrator grants it to).
"""

from __future__ import annotations

from django.apps import apps as global_apps
from django.db.models import Q

from iaas.contracts import selling

SUPPORT = "Support"
FINANCE = "Finance"

# Every model of these apps is visible to both roles, and of every selling context's.
VIEWABLE_APPS = ("billing", "contracts", "audit", "notifications")
# ... and these models of other apps: the customers, the runs of scheduled jobs, and the
# dead-lettered tasks.
VIEWABLE_MODELS = (
    ("auth", "user"),
    ("operations", "jobrun"),
    ("operations", "jobpart"),
    ("operations", "deadletter"),
)
# Both roles can send a customer's webhook delivery or email again and disable an
# endpoint that misbehaves.
NOTIFICATION_PERMISSIONS = (
    ("notifications", "change_webhookdelivery"),
    ("notifications", "change_webhookendpoint"),
    ("notifications", "change_outgoingemail"),
)
FINANCE_PERMISSIONS = (
    ("billing", "make_adjustment"),
    ("billing", "make_refund"),
    ("billing", "change_parkedpayment"),
    ("contracts", "retry_outboxmessage"),
    ("operations", "retry_deadletter"),
)


def viewable_apps() -> tuple[str, ...]:
    """The app labels whose every model both roles see: Billing's, the contracts' (the
    outbox), the history of changes, and each registered selling context's."""
    return (*VIEWABLE_APPS, *(context.app_label for context in selling.contexts()))


def _permissions(Permission, pairs):
    query = Q(pk__in=[])
    for app_label, codename in pairs:
        query |= Q(content_type__app_label=app_label, codename=codename)
    return Permission.objects.filter(query)


def install_operator_groups(apps=global_apps) -> None:
    """Create the groups and give them their permissions. Idempotent, and it only adds:
    run by the data migration, after every migrate (so models added later are visible
    to both roles), and by tests whose database was flushed."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    listed = Q(pk__in=[])
    for app_label, model in VIEWABLE_MODELS:
        listed |= Q(content_type__app_label=app_label, content_type__model=model)
    view = Permission.objects.filter(codename__startswith="view_").filter(
        Q(content_type__app_label__in=viewable_apps()) | listed
    )
    support, _ = Group.objects.get_or_create(name=SUPPORT)
    support.permissions.add(*view, *_permissions(Permission, NOTIFICATION_PERMISSIONS))
    finance, _ = Group.objects.get_or_create(name=FINANCE)
    finance.permissions.add(
        *view,
        *_permissions(Permission, FINANCE_PERMISSIONS),
        *_permissions(Permission, NOTIFICATION_PERMISSIONS),
    )
