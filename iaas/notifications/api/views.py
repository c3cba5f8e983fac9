"""The customer's webhook endpoints and deliveries: thin views over
iaas.notifications.webhooks and .selectors."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from iaas.api.filters import StrictFilterSet
from iaas.api.idempotency import idempotent
from iaas.common import outgoing

from .. import catalog, selectors, webhooks
from ..models import WebhookDelivery
from .serializers import (
    WebhookDeliverySerializer,
    WebhookEndpointPatchSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookEndpointWriteSerializer,
)

TAGS = ["webhooks"]
NO_REPLAY_NOTE = (
    " An `Idempotency-Key` is not honoured here: replaying the answer would mean storing the "
    "secret in plain text; delete an endpoint a retried request made twice."
)


class UnsafeURLProblem(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "unsafe_url"
    default_detail = "The URL is not one events may be sent to."


def _checked(call, **kwargs):
    try:
        return call(**kwargs)
    except outgoing.UnsafeURL as error:
        raise UnsafeURLProblem(f"The URL is not one events may be sent to: {error.reason}.") from None


class EndpointListCreateView(generics.ListAPIView):
    serializer_class = WebhookEndpointSerializer
    filter_backends = []
    problem_codes = {"post": {400: ["unsafe_url"], 409: ["invalid_state"]}}

    def get_queryset(self):
        return selectors.endpoint_list(owner_id=self.request.user.pk)

    @extend_schema(tags=TAGS, summary="List your webhook endpoints")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=TAGS,
        summary="Add a webhook endpoint",
        description="The answer holds the signing secret, this once." + NO_REPLAY_NOTE,
        request=WebhookEndpointWriteSerializer,
        responses={201: WebhookEndpointWithSecretSerializer},
    )
    def post(self, request):
        serializer = WebhookEndpointWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = _checked(webhooks.endpoint_create, owner_id=request.user.pk, **serializer.validated_data)
        body = WebhookEndpointWithSecretSerializer(created.endpoint, context={"secret": created.secret}).data
        return Response(body, status=status.HTTP_201_CREATED)


class EndpointDetailView(APIView):
    problem_codes = {"patch": {400: ["unsafe_url"]}}

    @extend_schema(tags=TAGS, summary="Show a webhook endpoint", responses={200: WebhookEndpointSerializer})
    def get(self, request, pk):
        endpoint = selectors.endpoint_get(owner_id=request.user.pk, endpoint_id=pk)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        tags=TAGS,
        summary="Change a webhook endpoint",
        description="`enabled: true` on an endpoint disabled for failing clears its failure.",
        request=WebhookEndpointPatchSerializer,
        responses={200: WebhookEndpointSerializer},
    )
    def patch(self, request, pk):
        serializer = WebhookEndpointPatchSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = _checked(
            webhooks.endpoint_update, owner_id=request.user.pk, endpoint_id=pk, **serializer.validated_data
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        tags=TAGS,
        summary="Delete a webhook endpoint",
        description="Nothing more is sent to it; its deliveries go with it.",
        responses={204: None},
    )
    def delete(self, request, pk):
        webhooks.endpoint_delete(owner_id=request.user.pk, endpoint_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RotateSecretView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Rotate a webhook endpoint's signing secret",
        description=(
            "A new secret, shown this once. The previous one keeps signing beside it (two "
            "signatures in `webhook-signature`) for 24 hours, so your receiver can switch "
            "without missing a message." + NO_REPLAY_NOTE
        ),
        request=None,
        responses={200: WebhookEndpointWithSecretSerializer},
    )
    def post(self, request, pk):
        rotated = webhooks.endpoint_rotate_secret(owner_id=request.user.pk, endpoint_id=pk)
        return Response(
            WebhookEndpointWithSecretSerializer(rotated.endpoint, context={"secret": rotated.secret}).data
        )


class DeliveryFilter(StrictFilterSet):
    endpoint = django_filters.UUIDFilter(field_name="endpoint_id")
    event_type = django_filters.ChoiceFilter(choices=[(name, name) for name in catalog.NAMES])
    status = django_filters.ChoiceFilter(choices=WebhookDelivery.Status.choices)

    class Meta:
        model = WebhookDelivery
        fields = ["endpoint", "event_type", "status"]


class DeliveryListView(generics.ListAPIView):
    serializer_class = WebhookDeliverySerializer
    filterset_class = DeliveryFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return WebhookDelivery.objects.none()
        return selectors.delivery_list(owner_id=self.request.user.pk)

    @extend_schema(tags=TAGS, summary="List webhook deliveries, newest first, with their latest attempts")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class RedeliverView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Send a webhook delivery again",
        description=(
            "The same message under the same `webhook-id` (deduplicate on it), signed afresh, "
            "now and with retries for three days. To a disabled endpoint it goes once the "
            "endpoint is enabled again."
        ),
        request=None,
        responses={202: WebhookDeliverySerializer},
    )
    @idempotent
    def post(self, request, pk):
        delivery = webhooks.delivery_redeliver(owner_id=request.user.pk, delivery_id=pk)
        delivery = selectors.delivery_get(owner_id=request.user.pk, delivery_id=delivery.pk)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
