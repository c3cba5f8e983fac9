"""The customer API of metered services, written once (API.md: servers, volumes): the
price list, the list and the purchase, one service and its end. A context's views
subclass these with its serializers and its services; the views stay thin (parse, call
a service, render)."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from iaas.api.fields import CatalogChoiceField, StrictUUIDField
from iaas.api.filters import StrictFilterSet
from iaas.api.idempotency import idempotent
from iaas.common.metrics import counts_purchases
from iaas.contracts.errors import PlanNotOnSale

from .metered import MeteredServices
from .models import SuspensionCause


class UsageThisMonthSerializer(serializers.Serializer):
    hours = serializers.IntegerField(
        min_value=0,
        help_text="Hours of the current calendar month paid for so far (a started hour is a whole one).",
    )
    amount = serializers.IntegerField(
        min_value=0,
        help_text="What those hours cost, in minor units of the wallet's currency, at most the monthly "
        "cap (refunded money does not count towards it). Spent as the hours accrue; on the wallet's "
        "ledger once settled.",
    )


class SoldServiceSerializer(serializers.ModelSerializer):
    """What every sold service shows (a server, a subscription, a volume): its plan, its
    wallet and its suspension causes. A subclass sets its Meta (model, fields)."""

    plan = serializers.CharField(source="plan_id", read_only=True, help_text="The plan's id.")
    wallet = serializers.UUIDField(source="wallet_id", read_only=True, help_text="The wallet that pays.")
    suspension_causes = serializers.ListField(
        child=serializers.ChoiceField(choices=SuspensionCause.choices),
        read_only=True,
        help_text="Why it is suspended (empty when it is not): unpaid (the wallet could not pay), "
        "wallet_blocked (the wallet is frozen or closed), operator (held by the provider). "
        "It runs again only when none holds.",
    )


class MeteredServiceSerializer(SoldServiceSerializer):
    """What every metered service shows besides: when it ends unless paid, and its usage
    of the month. A subclass sets ``metered`` (its context's MeteredServices)."""

    metered: MeteredServices

    terminates_at = serializers.SerializerMethodField(
        help_text="When it will be ended for non-payment unless the wallet pays: set only while it is "
        "suspended for unpaid alone; null when no clock runs.",
    )
    usage_this_month = serializers.SerializerMethodField(
        help_text="Its usage in the current calendar month so far (months run in the provider's time "
        "zone, UTC by default); zeros when it has none yet.",
    )

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_terminates_at(self, obj):
        return self.metered.terminates_at(obj)

    @extend_schema_field(UsageThisMonthSerializer)
    def get_usage_this_month(self, obj) -> dict:
        # A list or a detail reads it with the services (MeteredServices.owned); one just
        # bought carries its first hour (MeteredServices.start, server_create); one ended
        # is read once more.
        if hasattr(obj, "usage_hours"):
            hours, amount = obj.usage_hours, obj.usage_amount
        else:
            hours, amount = self.metered.usage_this_month(obj.pk)
        return {"hours": hours, "amount": amount}


class PurchaseSerializer(serializers.Serializer):
    """What every purchase names: an offered plan (checked by the statement that sells from
    it; the choices are read for the schema only) and the paying wallet. A subclass sets
    ``plans`` (its selector of the offered plans) and ``plans_path``, and adds its own
    fields."""

    plans = None
    plans_path = ""
    wallet = StrictUUIDField(help_text="One of your wallets, in the plan's currency.")

    def get_fields(self):
        plan = CatalogChoiceField(
            catalog=type(self).plans, help_text=f"The id of an offered plan (GET {self.plans_path})."
        )
        return {"plan": plan, **super().get_fields()}

    def plan_not_offered(self, error: PlanNotOnSale) -> serializers.ValidationError:
        """A plan the sale did not find: the 400 the plan field answers for it."""
        return self.fields["plan"].not_offered(error.plan_id)


class PlanListView(generics.ListAPIView):
    """The price list: public, like a shop window. A subclass sets ``serializer_class``
    and ``plans`` (a selector of the offered plans)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    filter_backends = []
    plans = None

    def get_queryset(self):
        return type(self).plans()


def status_filter(model) -> type[StrictFilterSet]:
    """The ``?status=`` filter of a service list."""
    return type(
        f"{model.__name__}Filter",
        (StrictFilterSet,),
        {
            "status": django_filters.ChoiceFilter(choices=model.Status.choices),
            "Meta": type("Meta", (), {"model": model, "fields": ["status"]}),
        },
    )


class ServiceListCreateView(generics.ListAPIView):
    """The customer's services, and buying one. A subclass sets ``metered``,
    ``serializer_class``, ``create_serializer_class`` and ``create`` (its service:
    ``create(owner_id=, wallet_id=, **the create serializer's other fields)``)."""

    metered: MeteredServices
    create_serializer_class: type[serializers.Serializer]
    create = None
    problem_codes = {
        "post": {
            402: ["insufficient_funds"],
            404: ["not_found"],
            409: ["currency_mismatch", "wallet_not_active"],
        }
    }

    def get_queryset(self):
        return self.metered.owned(owner_id=self.request.user.pk)

    @property
    def purchase_context(self) -> str:
        """The selling context a purchase here is counted under (iaas.common.metrics)."""
        return self.metered.spender.context

    @idempotent
    @counts_purchases
    def post(self, request):
        serializer = self.create_serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        wallet_id = data.pop("wallet")
        data["plan_id"] = data.pop("plan")
        # Another customer's wallet is a 404 (WalletNotFound), checked under the allowance
        # lock by the purchase, which rolls back: nothing is written.
        try:
            service = type(self).create(owner_id=request.user.pk, wallet_id=wallet_id, **data)
        except PlanNotOnSale as error:
            raise serializer.plan_not_offered(error) from None
        return Response(self.get_serializer(service).data, status=status.HTTP_201_CREATED)


class ServiceDetailView(generics.RetrieveAPIView):
    """One of the customer's services, and ending it. A subclass sets ``metered`` and
    ``serializer_class``."""

    metered: MeteredServices
    filter_backends = []

    def get_queryset(self):
        return self.metered.owned(owner_id=self.request.user.pk)

    def delete(self, request, pk):
        service = self.metered.end(service_id=pk, owner_id=request.user.pk)
        return Response(self.get_serializer(service).data)
