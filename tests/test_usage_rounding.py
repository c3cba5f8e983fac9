"""Exact accrual, rounded once (ARCHITECTURE.md, "Usage accrues in the context"): however a
month's hours are split into metering steps, and however the rate grows in between (a
volume grown), the steps spend exactly what the month costs, min(cap, its exact list
rounded once, half up), and each step keeps I11 true of the record. Pure arithmetic over
iaas.spending.usage: no database."""

from __future__ import annotations

import datetime as dt
import uuid
from fractions import Fraction

from hypothesis import example, given
from hypothesis import strategies as st

from iaas.spending import usage

MAY = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)  # 744 hours
SERVICE = uuid.UUID(int=1)


def half_up(value: Fraction) -> int:
    return int(value + Fraction(1, 2))  # never negative here: floor of x + 1/2


steps = st.lists(
    st.tuples(st.integers(min_value=1, max_value=80), st.integers(min_value=0, max_value=3)),
    min_size=1,
    max_size=20,
)


# A month the cap held down (743 hours listed 1017.8, 1000 spent), then grown: the new
# cap lets the month cost what it listed (I11's floor).
@example(divisor=730, price=10, size=100, steps=[(80, 0)] * 9 + [(23, 1)])
@given(
    divisor=st.sampled_from([1, 730]),
    price=st.integers(min_value=1, max_value=40),
    size=st.integers(min_value=1, max_value=2000),
    steps=steps,
)
def test_the_steps_add_up_to_the_month_rounded_once_under_its_cap(divisor, price, size, steps):
    """Each step accrues some hours, then the size may grow (its cap with it). With no
    refund, after every step: amount = min(cap, round(list_exact / divisor)) and
    list_amount = round(list_exact / divisor): I11, whatever the steps."""
    spent = {}
    start, total_hours = MAY, 0
    month = usage.month_of(MAY)
    for hours, growth in steps:
        hours = min(hours, 744 - total_hours)
        if hours > 0:
            for accrual in usage.price_hours(
                service_id=SERVICE,
                start=start,
                hours=hours,
                per_hour=size * price,
                cap=size * price * (1 if divisor > 1 else 700),
                spent=spent,
                divisor=divisor,
                tz=dt.UTC,
            ):
                before = spent.get(accrual.month, usage.MonthSpent())
                spent[accrual.month] = usage.MonthSpent(
                    before.amount + accrual.amount, 0, accrual.cap, before.list_exact + accrual.list_exact
                )
            start, total_hours = start + hours * usage.HOUR, total_hours + hours
        if growth and month in spent:  # grown: the month keeps the higher cap, no hour is added
            size += growth * 100
            held = spent[month]
            cap = max(held.cap, size * price * (1 if divisor > 1 else 700))
            raised = {month: usage.MonthSpent(held.amount, 0, cap, held.list_exact)}
            extra = usage.price_extra(
                service_id=SERVICE,
                hour_start=start - usage.HOUR,
                exact=growth * 100 * price,
                cap=cap,
                spent=raised,
                divisor=divisor,
            )
            spent[month] = usage.MonthSpent(
                held.amount + extra.amount, 0, cap, held.list_exact + extra.list_exact
            )
        record = spent.get(month)
        if record is None:
            continue
        listed = half_up(Fraction(record.list_exact, divisor))
        assert usage.rounded(record.list_exact, divisor) == listed
        assert record.amount == min(record.cap, listed)
