"""The operators' overview page: the invariant checks and their status, the event
deliveries waiting, the scheduled jobs' latest runs and the dead-lettered tasks, and the
money held per currency. Read-only; any staff user."""

from __future__ import annotations

from django.db.models import Count, Sum
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from iaas.billing.models import Wallet
from iaas.contracts.checks import INVARIANTS
from iaas.contracts.models import OutboxMessage
from iaas.contracts.types import format_minor_units
from iaas.operations import broker
from iaas.operations.metrics import latest_runs
from iaas.operations.models import DeadLetter
from iaas.operations.reconciliation import reconcile
from iaas.operations.schedule import JOBS

VIOLATIONS_SHOWN = 20


def invariant_rows(report) -> list[dict]:
    rows = []
    for name, description in INVARIANTS.items():
        violations = report.violations.get(name)
        status = "not checked" if violations is None else "holds" if not violations else "violated"
        rows.append(
            {
                "name": name,
                "description": description,
                "status": status,
                "count": len(violations or []),
                "violations": [
                    {
                        **violation.as_dict(),
                        "wallet_url": reverse("admin:billing_wallet_change", args=[violation.wallet_id])
                        if violation.wallet_id
                        else None,
                    }
                    for violation in (violations or [])[:VIOLATIONS_SHOWN]
                ],
            }
        )
    return rows


def outbox_summary() -> dict:
    undelivered = OutboxMessage.objects.exclude(status=OutboxMessage.Status.DONE)
    counts = dict(undelivered.values_list("status").annotate(n=Count("id")).order_by())
    oldest = (
        OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).order_by("created_at", "id").first()
    )
    now = timezone.now()
    return {
        "pending": counts.get(OutboxMessage.Status.PENDING, 0),
        "failed": counts.get(OutboxMessage.Status.FAILED, 0),
        "due": undelivered.filter(status=OutboxMessage.Status.PENDING, available_at__lte=now).count(),
        "retrying": undelivered.filter(status=OutboxMessage.Status.PENDING, attempts__gt=0).count(),
        "oldest": oldest,
        "oldest_url": reverse("admin:contracts_outboxmessage_change", args=[oldest.pk]) if oldest else None,
        "pending_url": reverse("admin:contracts_outboxmessage_changelist") + "?delivery=pending",
        "failed_url": reverse("admin:contracts_outboxmessage_changelist") + "?delivery=failed",
    }


def scheduled_jobs() -> dict:
    """Each job's latest run and latest success (one statement: the metrics' reading), and
    the dead letters waiting: what the task engine has been doing (empty where no broker
    runs the jobs)."""
    runs = latest_runs()
    rows = []
    for job in JOBS.values():
        latest = runs.get(("latest", job.name))
        rows.append(
            {
                "job": job,
                "latest": latest,
                "latest_url": reverse("admin:operations_jobrun_change", args=[latest.pk]) if latest else None,
                "success": runs.get(("succeeded", job.name)),
            }
        )
    return {
        "broker": broker.configured(),
        "rows": rows,
        "dead": DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).count(),
        "dead_url": reverse("admin:operations_deadletter_changelist") + "?status__exact=dead",
    }


def money_per_currency() -> list[dict]:
    rows = (
        Wallet.objects.values("currency")
        .annotate(wallets=Count("id"), balance=Sum("balance"), reserved=Sum("reserved"))
        .order_by("currency")
    )
    return [
        {
            "currency": row["currency"],
            "wallets": row["wallets"],
            "balance": format_minor_units(row["balance"], row["currency"]),
            "reserved": format_minor_units(row["reserved"], row["currency"]),
            "available": format_minor_units(row["balance"] - row["reserved"], row["currency"]),
            "url": reverse("admin:billing_wallet_changelist") + f"?currency__exact={row['currency']}",
        }
        for row in rows
    ]


def overview(request: HttpRequest, *, site) -> TemplateResponse:
    report = reconcile()
    return TemplateResponse(
        request,
        "admin/operations/overview.html",
        {
            **site.each_context(request),
            "title": "Operations overview",
            "checked_at": timezone.now(),
            # From the invariants alone: stuck or failed deliveries have their own panel.
            "all_hold": not any(report.violations.values()),
            "invariants": invariant_rows(report),
            "outbox": outbox_summary(),
            "jobs": scheduled_jobs(),
            "money": money_per_currency(),
        },
    )
