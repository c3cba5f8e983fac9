"""Issue the month's invoices: one per customer and currency, for the settled charges of
the month and any earlier one that settled late (I8), a line per service and month.
Refused while the month is incomplete (usage not closed into charges, charges not
settled). Safe to run again (an invoice for the period is never issued twice) and in two
processes at once (numbers stay gapless)."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.billing import invoicing
from iaas.common.cli import EXIT_PROBLEMS, EXIT_REFUSED, CurrencyTotals, dump_json, progress
from iaas.common.periods import Month
from iaas.contracts.types import format_minor_units

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Issue invoices for a month (default: last month): one per customer and currency."

    def add_arguments(self, parser):
        parser.add_argument("--period", help="the month, YYYY-MM (default: the previous month)")
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would be issued; change nothing"
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, period, dry_run, as_json, **options):
        now = timezone.now()
        try:
            month = Month.parse(period) if period else Month.containing(now).previous()
        except ValueError as error:
            raise CommandError(str(error), returncode=EXIT_REFUSED) from None
        if month.end > now:
            raise CommandError(
                f"{month} has not ended yet (it ends {month.end.isoformat()}); invoices are issued "
                "for a closed month.",
                returncode=EXIT_REFUSED,
            )
        blockers = invoicing.blockers(month)
        if blockers:
            raise CommandError(
                f"{month} is not complete yet: "
                + "; ".join(blockers)
                + ". Then try again; nothing was issued.",
                returncode=EXIT_REFUSED,
            )
        drafts = invoicing.invoice_drafts(month)
        issued, failed, skipped = [], [], 0
        totals = CurrencyTotals()
        if dry_run:
            for draft in drafts:
                totals.add(draft.total, draft.currency)
        else:
            for draft in progress(drafts, total=len(drafts), description=f"invoicing {month}"):
                try:
                    invoice = invoicing.invoice_issue(wallet_id=draft.wallet_id, period=month)
                except Exception as error:  # one customer's failure stops no one else's invoice
                    logger.exception("invoice for wallet %s failed", draft.wallet_id)
                    failed.append({"wallet_id": str(draft.wallet_id), "error": repr(error)})
                    continue
                if invoice is None:
                    skipped += 1  # issued meanwhile by another run
                    continue
                issued.append((invoice, invoice.lines.count()))
                totals.add(invoice.total, invoice.currency)
        self._report(month, drafts, issued, failed, skipped, totals, dry_run=dry_run, as_json=as_json)
        if failed:
            raise SystemExit(EXIT_PROBLEMS)

    def _report(self, month, drafts, issued, failed, skipped, totals, *, dry_run, as_json):
        if as_json:
            summary = {
                "period": str(month),
                "dry_run": dry_run,
                "issued": [
                    {
                        "id": str(invoice.id),
                        "number": invoice.number,
                        "owner_id": invoice.owner_id,
                        "currency": invoice.currency,
                        "total": invoice.total,
                        "lines": lines,
                    }
                    for invoice, lines in issued
                ],
                "would_issue": [
                    {
                        "wallet_id": str(d.wallet_id),
                        "owner_id": d.owner_id,
                        "currency": d.currency,
                        "lines": d.lines,
                        "total": d.total,
                    }
                    for d in drafts
                ]
                if dry_run
                else [],
                "skipped": skipped,
                "failed": failed,
                "totals": totals.as_dict(),
            }
            self.stdout.write(dump_json(summary))
            return
        if dry_run:
            self.stdout.write(f"{month}: would issue {len(drafts)} invoice(s), {totals} (dry run)")
            for d in drafts:
                self.stdout.write(
                    f"  customer {d.owner_id}  {d.lines} line(s)  {format_minor_units(d.total, d.currency)}"
                )
            return
        for invoice, lines in issued:
            self.stdout.write(
                f"  {invoice.number}  customer {invoice.owner_id}  {lines} line(s)  "
                f"{invoice.money(invoice.total)}"
            )
        first_last = f" ({issued[0][0].number} to {issued[-1][0].number})" if issued else ""
        self.stdout.write(
            f"{month}: issued {len(issued)} invoice(s){first_last}, {totals}; "
            f"{skipped} already issued by another run, {len(failed)} failed"
        )
        for failure in failed:
            self.stderr.write(f"  FAILED wallet {failure['wallet_id']}: {failure['error']}")
