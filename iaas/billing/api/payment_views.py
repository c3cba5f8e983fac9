"""The customer API of saved payment methods and automatic top-ups: thin views over
``payments.methods``, ``payments.auto`` and Billing's selectors.

Saving a card follows the top-up POST's shape: its first step, idempotent, commits the
pending method with the key's stored answer; the provider is asked after that commit,
outside any transaction, and the answer adds the setup's ``client_secret``, which is
therefore never stored with the key."""

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

from .. import selectors
from ..models import PaymentMethod
from ..payments import AmountTooSmall, auto, methods
from ..payments.stripe_provider import NAME as STRIPE
from .payment_serializers import (
    AutoTopUpSerializer,
    AutoTopUpWriteSerializer,
    PaymentMethodSerializer,
    PaymentMethodStartedSerializer,
)


class PaymentMethodFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=PaymentMethod.Status.choices)

    class Meta:
        model = PaymentMethod
        fields = ["status"]


class PaymentMethodListCreateView(generics.ListAPIView):
    serializer_class = PaymentMethodSerializer
    filterset_class = PaymentMethodFilter
    problem_codes = {"post": {409: ["payment_methods_unavailable"]}}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return PaymentMethod.objects.none()
        methods_shown = selectors.payment_method_list(owner_id=self.request.user.pk)
        if "status" not in self.request.query_params:
            methods_shown = methods_shown.exclude(status=PaymentMethod.Status.REMOVED)
        return methods_shown

    @extend_schema(
        summary="Your saved payment methods, newest first",
        description="Removed ones are left out unless `?status=removed` asks for them.",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Save a card for automatic top-ups",
        description=(
            "Commits a pending payment method, then asks the configured payment provider to save a "
            "card. With Stripe the answer is `pending` with a `client_secret` and `publishable_key`: "
            "the customer's browser completes the setup with Stripe.js (`confirmSetup`), and the "
            "method becomes `active` when Stripe says the card is saved. The sandbox saves a pretend "
            "card at once (`active`). The manual provider keeps no cards: 409 "
            "`payment_methods_unavailable`. If the provider cannot be reached the answer is a 503 "
            "and the pending method stays: the same request with the same `Idempotency-Key` "
            "carries on with the same setup. No request body."
        ),
        request=None,
        responses={201: PaymentMethodStartedSerializer},
    )
    @idempotent_in_its_first_step
    def post(self, request):
        opened = self._open(request)
        if opened.status_code != status.HTTP_201_CREATED:
            return opened
        # Outside the request's transaction, now committed: the provider is never called
        # inside a transaction that may roll back (ARCHITECTURE.md, "Money coming in").
        started = methods.payment_method_setup(method_id=opened.data["id"])
        answer = PaymentMethodStartedSerializer(started.method).data
        answer["client_secret"] = started.client_secret
        answer["publishable_key"] = (
            settings.IAAS_STRIPE_PUBLISHABLE_KEY if started.method.provider == STRIPE else None
        )
        headers = {name: opened.headers[name] for name in (REPLAYED_HEADER,) if name in opened.headers}
        return Response(answer, status=status.HTTP_201_CREATED, headers=headers)

    @idempotent
    def _open(self, request):
        """The pending method, committed with the key's stored answer (the method as it was
        opened); a replay answers the same method, which the POST then carries on."""
        method = methods.payment_method_open(owner_id=request.user.pk)
        return Response(PaymentMethodSerializer(method).data, status=status.HTTP_201_CREATED)


class PaymentMethodDetailView(APIView):
    @extend_schema(summary="Show a saved payment method", responses={200: PaymentMethodSerializer})
    def get(self, request, pk):
        method = selectors.payment_method_get(owner_id=request.user.pk, method_id=pk)
        return Response(PaymentMethodSerializer(method).data)

    @extend_schema(
        summary="Remove a saved payment method",
        description=(
            "The card is detached at the provider and can no longer be charged; an automatic "
            "top-up that used it is deleted. The method stays listed with `?status=removed` "
            "(top-ups point at it). Removing it again answers 204 too."
        ),
        responses={204: None},
    )
    def delete(self, request, pk):
        methods.payment_method_remove(owner_id=request.user.pk, method_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AutoTopUpView(APIView):
    problem_codes = {"put": {404: ["not_found"]}}

    @extend_schema(
        summary="Show a wallet's automatic top-up",
        description="404 when the wallet has none.",
        responses={200: AutoTopUpSerializer},
    )
    def get(self, request, wallet_id):
        return Response(
            AutoTopUpSerializer(selectors.auto_top_up_get(owner_id=request.user.pk, wallet_id=wallet_id)).data
        )

    @extend_schema(
        summary="Set up a wallet's automatic top-up",
        description=(
            "When a purchase (or any debit) takes the wallet's available balance below `threshold`, "
            "the saved `payment_method` is charged `amount`, off-session, one top-up at a time; a "
            "wallet below the threshold already is topped up at once. A refused charge (declined, "
            "authentication required) fails that top-up, tells you (the `top_up.failed` webhook "
            "and email) and is tried again later, at most IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS times "
            "in 24 hours. The payment method must be yours (else 404) and `active` (else 400). "
            "Answers the setting with its state."
        ),
        request=AutoTopUpWriteSerializer,
        responses={200: AutoTopUpSerializer},
    )
    def put(self, request, wallet_id):
        serializer = AutoTopUpWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            auto.auto_top_up_set(
                wallet_id=wallet_id,
                owner_id=request.user.pk,
                threshold=serializer.validated_data["threshold"],
                amount=serializer.validated_data["amount"],
                payment_method_id=serializer.validated_data["payment_method"],
            )
        except auto.PaymentMethodNotUsable as unusable:
            raise ValidationError({"payment_method": [str(unusable)]}) from None
        except AmountTooSmall as too_small:
            raise ValidationError({"amount": [str(too_small)]}) from None
        shown = selectors.auto_top_up_get(owner_id=request.user.pk, wallet_id=wallet_id)
        return Response(AutoTopUpSerializer(shown).data)

    @extend_schema(
        summary="Stop a wallet's automatic top-ups",
        description="404 when the wallet has none. A top-up already under way is not stopped.",
        responses={204: None},
    )
    def delete(self, request, wallet_id):
        auto.auto_top_up_delete(wallet_id=wallet_id, owner_id=request.user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
