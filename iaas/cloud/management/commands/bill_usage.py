"""Hourly metering of cloud servers: charge the started hours since each server's
``paid_until`` (capped per calendar month), suspend servers whose wallet cannot pay,
resume them when it can, terminate those suspended past the grace period.

Safe to run again (an hour is charged once: ``paid_until`` moves with the charge) and
in two processes at once (each server is locked with SKIP LOCKED; a locked one is left
to the next run)."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from iaas.cloud import services
from iaas.common.cli import (
    EXIT_PROBLEMS,
    ChargeTally,
    CurrencyTotals,
    add_dry_run_and_json_arguments,
    dump_json,
    duration_option,
    format_duration,
    run_each,
    write_failures,
)

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Charge running servers by the hour (capped monthly); suspend, resume, terminate."

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            help="terminate servers suspended longer than this (e.g. 72h, 7d; "
            "default IAAS_SERVER_GRACE_HOURS)",
        )
        add_dry_run_and_json_arguments(parser, dry_run_help="show what is due; change nothing")

    def handle(self, *args, grace, dry_run, as_json, **options):
        grace = duration_option(grace) if grace else dt.timedelta(hours=settings.IAAS_SERVER_GRACE_HOURS)
        now = timezone.now()
        server_ids = services.servers_to_meter(now=now)
        if dry_run:
            self._dry_run(server_ids, now, as_json=as_json)
            return
        outcomes, failures = run_each(
            server_ids,
            lambda server_id: services.server_bill_usage(server_id=server_id, now=now, grace=grace),
            description="metering servers",
            identify=lambda server_id: (f"server {server_id}", {"server_id": str(server_id)}),
            logger=logger,
        )
        tally = ChargeTally(outcomes, units=lambda outcome: outcome.hours)
        actions, hours, totals = tally.actions, tally.units, tally.totals
        released = services.allowance_release_after_batch(wallet_ids=tally.charged_wallets)
        summary = {
            "now": now.isoformat(),
            "servers": len(server_ids),
            "hours_charged": hours,
            "amounts": totals.as_dict(),
            **{action: actions[action] for action in services.MeteringOutcome.ACTIONS},
            "allowances_released": released,
            "failed": [failure.as_dict() for failure in failures],
        }
        if as_json:
            self.stdout.write(dump_json(summary))
        else:
            self.stdout.write(
                f"metered {len(server_ids)} server(s) at {now:%Y-%m-%d %H:%M %Z}: "
                f"{actions['charged'] + actions['resumed']} charged for {hours} hour(s), {totals}"
            )
            self.stdout.write(
                f"  suspended {actions['suspended']}, resumed {actions['resumed']}, "
                f"still suspended {actions['still_suspended']}, terminated {actions['terminated']} "
                f"(grace {format_duration(grace)}), busy elsewhere {actions['busy']}, "
                f"failed {len(failures)}"
            )
            write_failures(self.stderr, failures)
        if failures:
            raise SystemExit(EXIT_PROBLEMS)

    def _dry_run(self, server_ids, now, *, as_json):
        due = []
        totals = CurrencyTotals()
        for server_id in server_ids:
            charges = services.server_usage_due(server_id=server_id, now=now)
            if charges:
                amount = sum(c.amount for c in charges)
                due.append(
                    {
                        "server_id": str(server_id),
                        "hours": sum(c.hours for c in charges),
                        "amount": amount,
                    }
                )
                for charge in charges:
                    totals.add(charge.amount, charge.currency)
        if as_json:
            self.stdout.write(dump_json({"dry_run": True, "now": now.isoformat(), "due": due}))
            return
        self.stdout.write(
            f"{len(due)} active server(s) have {sum(d['hours'] for d in due)} started hour(s) due, "
            f"{totals} (dry run; suspended servers are not tried)"
        )
