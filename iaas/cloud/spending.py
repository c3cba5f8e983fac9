"""Cloud's instances of the kit: its spending mechanism, and its servers as metered
services (billed by the hour at their plan's price, under its monthly cap)."""

import datetime as dt

from django.conf import settings
from django.db.models import F

from iaas.contracts.events import ServerResumed, ServerSuspended, ServerTerminated
from iaas.spending.metered import MeteredServices
from iaas.spending.sold import ServiceEvents
from iaas.spending.spender import Spender

from .models import Allowance, Charge, Release, Server, Usage

spender = Spender(
    context="cloud",  # the name Billing knows it under (holds, ledger entries)
    allowance_model=Allowance,
    charge_model=Charge,
    release_model=Release,
    usage_model=Usage,
    describe_usage=lambda records: servers.describe_usage(records),
)

servers = MeteredServices(
    spender=spender,
    service_model=Server,
    events=ServiceEvents(
        id_field="server_id", suspended=ServerSuspended, resumed=ServerResumed, ended=ServerTerminated
    ),
    # A server's hour costs its plan's price (whole minor units), under the plan's cap.
    terms={
        "rate_per_hour": F("plan__price_per_hour"),
        "rate_cap": F("plan__monthly_cap"),
        "rate_currency": F("plan__currency"),
    },
    grace=lambda: dt.timedelta(hours=settings.IAAS_SERVER_GRACE_HOURS),
    # What its events show (the API's detail, as the customer reads it).
    serializer="iaas.cloud.api.serializers.ServerSerializer",
)
