"""Renew hosting subscriptions whose period has ended: a month each, charged; suspend
those whose wallet cannot pay, resume them when it can, cancel those unpaid past the
grace period (IAAS_HOSTING_GRACE_DAYS); never renew a cancelled one, never lift an
operator's hold.

Safe to run again (a month is charged once: the period end moves with the charge) and
in two processes at once (each subscription is locked with SKIP LOCKED)."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand
from django.utils import timezone

from iaas.common.cli import (
    EXIT_PROBLEMS,
    ChargeTally,
    CurrencyTotals,
    add_dry_run_and_json_arguments,
    dump_json,
    run_each,
    write_failures,
)
from iaas.hosting import services

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Renew ended hosting periods for a month (charged); suspend, resume, cancel unpaid."

    def add_arguments(self, parser):
        add_dry_run_and_json_arguments(parser, dry_run_help="show what is due; change nothing")

    def handle(self, *args, dry_run, as_json, **options):
        now = timezone.now()
        subscription_ids = services.subscriptions_to_renew(now=now)
        if dry_run:
            self._dry_run(subscription_ids, now, as_json=as_json)
            return
        outcomes, failures = run_each(
            subscription_ids,
            lambda subscription_id: services.subscription_renew(subscription_id=subscription_id, now=now),
            description="renewing subscriptions",
            identify=lambda subscription_id: (
                f"subscription {subscription_id}",
                {"subscription_id": str(subscription_id)},
            ),
            logger=logger,
        )
        tally = ChargeTally(outcomes, units=lambda outcome: outcome.months)
        actions, months, totals = tally.actions, tally.units, tally.totals
        released = services.allowance_release_after_batch(wallet_ids=tally.charged_wallets)
        summary = {
            "now": now.isoformat(),
            "subscriptions": len(subscription_ids),
            "months_charged": months,
            "amounts": totals.as_dict(),
            **{action: actions[action] for action in services.RenewalOutcome.ACTIONS},
            "allowances_released": released,
            "failed": [failure.as_dict() for failure in failures],
        }
        if as_json:
            self.stdout.write(dump_json(summary))
        else:
            self.stdout.write(
                f"checked {len(subscription_ids)} subscription(s) at {now:%Y-%m-%d %H:%M %Z}: "
                f"renewed {actions['renewed']} for {months} month(s) in all, {totals}"
            )
            self.stdout.write(
                f"  suspended {actions['suspended']}, resumed {actions['resumed']}, "
                f"still suspended {actions['still_suspended']}, cancelled unpaid {actions['cancelled']}, "
                f"busy elsewhere {actions['busy']}, "
                f"failed {len(failures)}"
            )
            write_failures(self.stderr, failures)
        if failures:
            raise SystemExit(EXIT_PROBLEMS)

    def _dry_run(self, subscription_ids, now, *, as_json):
        due = []
        totals = CurrencyTotals()
        for subscription_id in subscription_ids:
            months, amount, currency = services.subscription_renewals_due(
                subscription_id=subscription_id, now=now
            )
            if months:
                due.append({"subscription_id": str(subscription_id), "months": months, "amount": amount})
                totals.add(amount, currency)
        if as_json:
            self.stdout.write(dump_json({"dry_run": True, "now": now.isoformat(), "due": due}))
            return
        self.stdout.write(
            f"{len(due)} active subscription(s) due for {sum(d['months'] for d in due)} month(s), "
            f"{totals} (dry run; suspended ones are not tried)"
        )
