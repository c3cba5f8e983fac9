"""Storage's instances of the kit: its spending mechanism, and its volumes as metered
services. A volume's hour costs its size times its plan's GB-month price over 730 hours,
counted exactly (the usage record's list_exact, in 730ths of a minor unit) and rounded
once per month; a month costs at most a full GB-month per GB of its largest size."""

import datetime as dt

from django.db.models import F

from iaas.contracts.events import VolumeDeleted, VolumeResumed, VolumeSuspended
from iaas.spending.metered import MeteredServices, grace_hours
from iaas.spending.sold import ServiceEvents
from iaas.spending.spender import Spender

from .models import Allowance, Charge, Release, Usage, Volume

GRACE_HOURS = 7 * 24  # the default; IAAS_GRACE_HOURS_STORAGE in the environment

spender = Spender(
    context="storage",  # the name Billing knows it under (holds, ledger entries)
    allowance_model=Allowance,
    charge_model=Charge,
    release_model=Release,
    usage_model=Usage,
    describe_usage=lambda records: volumes.describe_usage(records),
)

volumes = MeteredServices(
    spender=spender,
    service_model=Volume,
    events=ServiceEvents(
        id_field="volume_id", suspended=VolumeSuspended, resumed=VolumeResumed, ended=VolumeDeleted
    ),
    terms={
        # Per hour in 730ths of a minor unit: size x price per GB-month (exact).
        "rate_per_hour": F("size_gb") * F("plan__price_per_gb_month"),
        "rate_cap": F("size_gb") * F("plan__price_per_gb_month"),
        "rate_currency": F("plan__currency"),
    },
    grace=lambda: dt.timedelta(hours=grace_hours("storage", GRACE_HOURS)),
    # What its events show (the API's detail, as the customer reads it).
    serializer="iaas.storage.api.serializers.VolumeSerializer",
)
