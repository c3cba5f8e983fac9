"""Usage records for the servers that ran before usage accrued in place, built from
their charges, so that each server's months read as if metered the new way and
reconcile's I11 holds for them: one record per server and calendar month (the
project's time zone), everything in it closed (the charges exist and are settled or
on their way to Billing, so no settlement run closes them again).

- hours: each charge's period in started hours, in the month its hours start in (the
  old metering split its charges at month ends, so a charge's hours share a month);
  plus the hours the cap made free, which were never charged: from the last charge's
  end up to ``paid_until`` (split by month as metering splits them). Free hours in
  earlier months cannot be told apart from time a server spent suspended and are not
  counted.
- amount and refunded: the sums of the month's charges and of their refunds;
  closed_amount = amount, closed_hours = hours, closed_until = accrued_until.
- accrued_until: the end of the month's last charge; for the latest month, the
  server's ``paid_until`` (I11: a service is paid up to where its usage accrued).
- cap: the plan's ``monthly_cap``, or what the month was charged net of refunds when
  that is more (the cap in force then was at least that much; a cap lowered since
  must not make history look overcharged).
- list_amount: the old charges did not keep the price each hour listed at. A month
  under its cap had every hour charged, so its list is what was charged; a capped
  month's is at least the hours at the plan's price: ``max(amount, hours x price)``.

A server that already has a usage record (bought or metered since the records exist)
keeps it; a server without charges gets none. Reversing does nothing: the records are
dropped with their table when 0004 is reversed.
"""

from __future__ import annotations

import datetime as dt
import math

from django.db import migrations
from django.utils import timezone

HOUR = dt.timedelta(hours=1)
SERVERS_PER_BATCH = 500  # under SQLite's limit on bound parameters, with room to spare


def started_hours(start: dt.datetime, until: dt.datetime) -> int:
    if until <= start:
        return 0
    return math.ceil((until - start) / HOUR)


def month_of(moment: dt.datetime) -> dt.date:
    local = timezone.localtime(moment)
    return dt.date(local.year, local.month, 1)


def month_end(month: dt.date) -> dt.datetime:
    following = (
        dt.date(month.year + 1, 1, 1) if month.month == 12 else dt.date(month.year, month.month + 1, 1)
    )
    return timezone.make_aware(dt.datetime(following.year, following.month, 1))


class Month:
    def __init__(self, until: dt.datetime) -> None:
        self.hours = self.amount = self.refunded = 0
        self.until = until


def months_of(server, charges) -> dict[dt.date, Month]:
    months: dict[dt.date, Month] = {}
    for start, end, amount, refunded in charges:
        month = months.setdefault(month_of(start), Month(end))
        month.hours += started_hours(start, end)
        month.amount += amount
        month.refunded += refunded
        month.until = max(month.until, end)
    # The hours under the cap that cost nothing: never charged, but paid for.
    start = max(end for _, end, _, _ in charges)
    free = started_hours(start, server.paid_until)
    while free > 0:
        first_day = month_of(start)
        in_month = min(free, started_hours(start, month_end(first_day)))
        month = months.setdefault(first_day, Month(start))
        month.hours += in_month
        start, free = start + in_month * HOUR, free - in_month
        month.until = max(month.until, start)
    months[max(months)].until = server.paid_until
    return months


def records_for(Usage, server, charges, now: dt.datetime) -> list:
    plan = server.plan
    records = []
    for first_day, month in sorted(months_of(server, charges).items()):
        cap = max(plan.monthly_cap, month.amount - month.refunded)
        capped = month.amount >= cap
        list_amount = max(month.amount, month.hours * plan.price_per_hour) if capped else month.amount
        records.append(
            Usage(
                service_id=server.id,
                month=first_day,
                wallet_id=server.wallet_id,
                owner_id=server.owner_id,
                currency=plan.currency,
                hours=month.hours,
                list_amount=list_amount,
                cap=cap,
                amount=month.amount,
                refunded=month.refunded,
                accrued_until=month.until,
                closed_amount=month.amount,
                closed_hours=month.hours,
                closed_until=month.until,
                close_due_at=None,
                updated_at=now,
            )
        )
    return records


def forward(apps, schema_editor):
    Server = apps.get_model("cloud", "Server")
    Charge = apps.get_model("cloud", "Charge")
    Usage = apps.get_model("cloud", "Usage")
    db = schema_editor.connection.alias
    now = timezone.now()
    servers = Server.objects.using(db).select_related("plan").order_by("id")
    last = None
    while True:
        batch = list((servers.filter(id__gt=last) if last else servers)[:SERVERS_PER_BATCH])
        if not batch:
            return
        last = batch[-1].id
        ids = [server.id for server in batch]
        metered = set(Usage.objects.using(db).filter(service_id__in=ids).values_list("service_id", flat=True))
        charges: dict = {}
        for subject_id, *charge in (
            Charge.objects.using(db)
            .filter(subject_id__in=ids)
            .order_by("subject_id", "period_start")
            .values_list("subject_id", "period_start", "period_end", "amount", "refunded_amount")
        ):
            charges.setdefault(subject_id, []).append(tuple(charge))
        records = [
            record
            for server in batch
            if server.id not in metered and server.id in charges
            for record in records_for(Usage, server, charges[server.id], now)
        ]
        Usage.objects.using(db).bulk_create(records)


class Migration(migrations.Migration):
    dependencies = [("cloud", "0006_charge_no_overlap")]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
