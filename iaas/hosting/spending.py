"""Hosting's instances of the kit: its spending mechanism, and its subscriptions as sold
services (what their lifecycle events tell, and their grace period)."""

import datetime as dt

from django.conf import settings

from iaas.contracts.events import SubscriptionCancelled, SubscriptionResumed, SubscriptionSuspended
from iaas.spending.sold import ServiceEvents, SoldServices
from iaas.spending.spender import Spender

from .models import Allowance, Charge, Release, Subscription

spender = Spender(
    context="hosting",  # the name Billing knows it under (holds, ledger entries)
    allowance_model=Allowance,
    charge_model=Charge,
    release_model=Release,
)

subscriptions = SoldServices(
    spender=spender,
    service_model=Subscription,
    events=ServiceEvents(
        id_field="subscription_id",
        suspended=SubscriptionSuspended,
        resumed=SubscriptionResumed,
        ended=SubscriptionCancelled,
    ),
    # A subscription unpaid alone this long is cancelled by renew_subscriptions.
    grace=lambda: dt.timedelta(days=settings.IAAS_HOSTING_GRACE_DAYS),
    # What its events show (the API's detail, as the customer reads it).
    serializer="iaas.hosting.api.serializers.SubscriptionSerializer",
)
