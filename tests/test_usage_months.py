"""The month a metered hour belongs to, computed fast for a batch, agrees with the
calendar months invoices use (iaas.common.periods.Month), in any project time zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from hypothesis import given
from hypothesis import strategies as st

from iaas.common.periods import Month
from iaas.spending.usage import _month_span

ZONES = [zoneinfo.ZoneInfo(name) for name in ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Apia")]


@given(
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
    ),
    st.sampled_from(ZONES),
)
def test_a_moments_month_is_the_calendar_month(moment, zone):
    from django.utils import timezone

    with timezone.override(zone):
        month = Month.containing(moment)
        assert _month_span(moment, zone) == (dt.date(month.year, month.month, 1), month.end)
