"""Billing's customer API: thin views over Billing's services and selectors."""

from __future__ import annotations

import django_filters
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from iaas.api.filters import StrictFilterSet
from iaas.api.idempotency import REPLAYED_HEADER, idempotent, idempotent_in_its_first_step
from iaas.api.pagination import SequenceCursorPagination

from .. import selectors, services
from ..models import LedgerEntry, TopUp
from ..payments import AmountTooSmall
from .serializers import (
    InvoiceSerializer,
    LedgerEntrySerializer,
    TopUpCreateSerializer,
    TopUpSerializer,
    TopUpStartedSerializer,
    WalletCreateSerializer,
    WalletSerializer,
    WalletUpdateSerializer,
)


class WalletListCreateView(generics.ListAPIView):
    serializer_class = WalletSerializer
    filter_backends = []
    problem_codes = {"post": {409: ["wallet_exists"]}}

    def get_queryset(self):
        return selectors.wallet_list(owner_id=self.request.user.pk)

    @extend_schema(summary="List your wallets")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Open a wallet", request=WalletCreateSerializer, responses={201: WalletSerializer})
    @idempotent
    def post(self, request):
        serializer = WalletCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        wallet = services.wallet_create(
            owner_id=request.user.pk, currency=serializer.validated_data["currency"]
        )
        return Response(WalletSerializer(wallet).data, status=status.HTTP_201_CREATED)


class WalletDetailView(generics.RetrieveAPIView):
    serializer_class = WalletSerializer
    filter_backends = []

    def get_queryset(self):
        return selectors.wallet_list(owner_id=self.request.user.pk)

    @extend_schema(summary="Show a wallet")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Set a wallet's low-balance alert",
        description=(
            "`low_balance_threshold` is the one writable field (others are ignored): minor units "
            "from 0 to the top-up limit, or null to turn the alert off. The customer is told "
            "once each time the available balance drops from at or above "
            "the threshold to below it (the `wallet.low_balance` webhook event, and email), and at "
            "once when a new threshold is above what is available now. Without the field, nothing "
            "changes. Answers the wallet."
        ),
        request=WalletUpdateSerializer,
        responses={200: WalletSerializer},
    )
    def patch(self, request, pk):
        serializer = WalletUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "low_balance_threshold" in serializer.validated_data:
            wallet = services.wallet_low_balance_threshold_set(
                wallet_id=pk,
                owner_id=request.user.pk,
                threshold=serializer.validated_data["low_balance_threshold"],
            )
        else:
            wallet = self.get_object()
        return Response(WalletSerializer(wallet).data)


class LedgerFilter(StrictFilterSet):
    kind = django_filters.ChoiceFilter(choices=LedgerEntry.Kind.choices)
    # ?transaction_date_after=2026-01-01&transaction_date_before=2026-01-31 (whole days, inclusive)
    transaction_date = django_filters.DateFromToRangeFilter()

    class Meta:
        model = LedgerEntry
        fields = ["kind", "transaction_date"]


class LedgerView(generics.ListAPIView):
    serializer_class = LedgerEntrySerializer
    pagination_class = SequenceCursorPagination
    filterset_class = LedgerFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return LedgerEntry.objects.none()
        return selectors.ledger_entries(owner_id=self.request.user.pk, wallet_id=self.kwargs["wallet_id"])

    @extend_schema(
        summary="A wallet's ledger, newest first",
        description="Ordered by the wallet's posting sequence, highest first; cursor-paginated.",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class TopUpFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=TopUp.Status.choices)

    class Meta:
        model = TopUp
        fields = ["status"]


class TopUpListCreateView(generics.ListAPIView):
    serializer_class = TopUpSerializer
    filterset_class = TopUpFilter
    problem_codes = {"post": {404: ["not_found"], 409: ["wallet_not_active"]}}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return TopUp.objects.none()
        return selectors.top_up_list(owner_id=self.request.user.pk, wallet_id=self.kwargs["wallet_id"])

    @extend_schema(
        summary="A wallet's top-ups, newest first",
        description="Pending and failed ones included; `?status=` filters by status.",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Top up a wallet",
        description=(
            "Commits a pending top-up, then asks the configured payment provider for the money. "
            "The sandbox answers `succeeded` (credited before this answer); the manual provider "
            "`pending` (an operator confirms it). With Stripe the answer is `pending` with a "
            "`client_secret` and `publishable_key`: the customer's browser completes the payment "
            "with Stripe.js, and the wallet is credited when Stripe says it succeeded (README). "
            "If the provider cannot be reached the answer is a 503 and the pending top-up stays: "
            "the same request with the same `Idempotency-Key` carries on with the same payment."
        ),
        request=TopUpCreateSerializer,
        responses={201: TopUpStartedSerializer},
    )
    @idempotent_in_its_first_step
    def post(self, request, wallet_id):
        opened = self._open(request, wallet_id)
        if opened.status_code != status.HTTP_201_CREATED:
            return opened
        # Outside the request's transaction, now committed: the provider is never called
        # inside a transaction that may roll back (ARCHITECTURE.md, "Money coming in").
        started = services.top_up_start(top_up_id=opened.data["id"])
        answer = TopUpStartedSerializer(started.top_up).data
        answer["client_secret"] = (
            started.client_secret if started.top_up.status == TopUp.Status.PENDING else None
        )
        answer["publishable_key"] = settings.IAAS_STRIPE_PUBLISHABLE_KEY if started.client_secret else None
        headers = {name: opened.headers[name] for name in (REPLAYED_HEADER,) if name in opened.headers}
        return Response(answer, status=status.HTTP_201_CREATED, headers=headers)

    @idempotent
    def _open(self, request, wallet_id):
        """The pending top-up, committed with the key's stored answer (the top-up as it was
        opened); a replay answers the same top-up, which the POST then carries on."""
        serializer = TopUpCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            top_up = services.top_up_open(
                wallet_id=wallet_id, owner_id=request.user.pk, amount=serializer.validated_data["amount"]
            )
        except AmountTooSmall as too_small:
            raise ValidationError({"amount": [str(too_small)]}) from None
        return Response(TopUpSerializer(top_up).data, status=status.HTTP_201_CREATED)


class TopUpDetailView(APIView):
    @extend_schema(summary="Show a top-up and its status", responses={200: TopUpSerializer})
    def get(self, request, wallet_id, top_up_id):
        top_up = selectors.top_up_get(owner_id=request.user.pk, wallet_id=wallet_id, top_up_id=top_up_id)
        return Response(TopUpSerializer(top_up).data)


class InvoiceListView(generics.ListAPIView):
    serializer_class = InvoiceSerializer
    filter_backends = []

    def get_queryset(self):
        return selectors.invoice_list(owner_id=self.request.user.pk)

    @extend_schema(summary="List your invoices")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class InvoiceDetailView(APIView):
    @extend_schema(summary="Show an invoice", responses={200: InvoiceSerializer})
    def get(self, request, invoice_id):
        invoice = selectors.invoice_get(owner_id=request.user.pk, invoice_id=invoice_id)
        return Response(InvoiceSerializer(invoice).data)
