"""Hosting's customer API: thin views over Hosting's services and selectors."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from iaas.api.filters import StrictFilterSet
from iaas.api.idempotency import idempotent
from iaas.common.metrics import counts_purchases
from iaas.contracts.errors import PlanNotOnSale

from .. import selectors, services
from ..models import Subscription
from ..spending import spender
from .serializers import HostingPlanSerializer, SubscriptionCreateSerializer, SubscriptionSerializer


class PlanListView(generics.ListAPIView):
    """The price list: public, like a shop window."""

    authentication_classes = []
    permission_classes = [AllowAny]
    serializer_class = HostingPlanSerializer
    filter_backends = []

    def get_queryset(self):
        return selectors.plan_list()

    @extend_schema(summary="List the hosting plans")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class SubscriptionFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Subscription.Status.choices)

    class Meta:
        model = Subscription
        fields = ["status"]


class SubscriptionListCreateView(generics.ListAPIView):
    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilter
    purchase_context = spender.context  # what a purchase here is counted under (iaas.common.metrics)
    problem_codes = {
        "post": {
            402: ["insufficient_funds"],
            404: ["not_found"],
            409: ["currency_mismatch", "wallet_not_active", "domain_taken"],
        }
    }

    def get_queryset(self):
        return selectors.subscription_list(owner_id=self.request.user.pk)

    @extend_schema(summary="List your hosting subscriptions")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Subscribe to a hosting plan",
        description=(
            "The first month is charged at once; the subscription is `active`. When the wallet cannot "
            "pay that month, 402 `insufficient_funds` and nothing is created."
        ),
        request=SubscriptionCreateSerializer,
        responses={201: SubscriptionSerializer},
    )
    @idempotent
    @counts_purchases
    def post(self, request):
        serializer = SubscriptionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # Another customer's wallet is a 404 (WalletNotFound), checked under the allowance
        # lock by the purchase, which rolls back: nothing is written.
        try:
            subscription = services.subscription_create(
                owner_id=request.user.pk,
                wallet_id=data["wallet"],
                domain=data["domain"],
                plan_id=data["plan"],
            )
        except PlanNotOnSale as error:
            raise serializer.plan_not_offered(error) from None
        return Response(SubscriptionSerializer(subscription).data, status=status.HTTP_201_CREATED)


class SubscriptionDetailView(generics.RetrieveAPIView):
    serializer_class = SubscriptionSerializer
    filter_backends = []

    def get_queryset(self):
        return selectors.subscription_list(owner_id=self.request.user.pk)

    @extend_schema(summary="Show a hosting subscription")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Cancel a hosting subscription",
        description="The service runs to the end of the paid period and is not renewed.",
        responses={200: SubscriptionSerializer},
    )
    def delete(self, request, pk):
        subscription = services.subscription_cancel(subscription_id=pk, owner_id=request.user.pk)
        return Response(SubscriptionSerializer(subscription).data)
