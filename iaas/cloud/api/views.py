"""Cloud's customer API: thin views over Cloud's services and selectors."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from iaas.api.filters import StrictFilterSet
from iaas.api.idempotency import idempotent
from iaas.contracts import billing

from .. import selectors, services
from ..models import Server
from .serializers import ServerCreateSerializer, ServerPlanSerializer, ServerSerializer


class PlanListView(generics.ListAPIView):
    """The price list: public, like a shop window."""

    authentication_classes = []
    permission_classes = [AllowAny]
    serializer_class = ServerPlanSerializer
    filter_backends = []

    def get_queryset(self):
        return selectors.plan_list()

    @extend_schema(summary="List the server plans")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ServerFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Server.Status.choices)

    class Meta:
        model = Server
        fields = ["status"]


class ServerListCreateView(generics.ListAPIView):
    serializer_class = ServerSerializer
    filterset_class = ServerFilter
    problem_codes = {
        "post": {
            402: ["insufficient_funds"],
            404: ["not_found"],
            409: ["currency_mismatch", "wallet_not_active"],
        }
    }

    def get_queryset(self):
        return selectors.server_list(owner_id=self.request.user.pk)

    @extend_schema(summary="List your servers")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Buy a server",
        description=(
            "The first hour is charged at once; the server is `active`. When the wallet cannot pay "
            "that hour, 402 `insufficient_funds` and nothing is created."
        ),
        request=ServerCreateSerializer,
        responses={201: ServerSerializer},
    )
    @idempotent
    def post(self, request):
        serializer = ServerCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # Another customer's wallet is a 404 before anything is written.
        billing.wallet_view(wallet_id=data["wallet"], owner_id=request.user.pk)
        server = services.server_create(
            owner_id=request.user.pk, wallet_id=data["wallet"], name=data["name"], plan_id=data["plan"]
        )
        return Response(ServerSerializer(server).data, status=status.HTTP_201_CREATED)


class ServerDetailView(generics.RetrieveAPIView):
    serializer_class = ServerSerializer
    filter_backends = []

    def get_queryset(self):
        return selectors.server_list(owner_id=self.request.user.pk)

    @extend_schema(summary="Show a server")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Terminate a server",
        description=(
            "The hour already paid is not refunded; no further charges. Terminating twice is harmless."
        ),
        responses={200: ServerSerializer},
    )
    def delete(self, request, pk):
        server = services.server_terminate(server_id=pk, owner_id=request.user.pk)
        return Response(ServerSerializer(server).data)
