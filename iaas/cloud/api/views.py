"""Cloud's customer API: the kit's metered-service views (iaas.spending.api) over Cloud's
services and selectors."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view

from iaas.spending import api

from .. import selectors, services
from ..models import Server
from ..spending import servers
from .serializers import ServerCreateSerializer, ServerPlanSerializer, ServerSerializer


@extend_schema_view(get=extend_schema(summary="List the server plans"))
class PlanListView(api.PlanListView):
    serializer_class = ServerPlanSerializer
    plans = selectors.plan_list


@extend_schema_view(
    get=extend_schema(summary="List your servers"),
    post=extend_schema(
        summary="Buy a server",
        description=(
            "The first hour is charged at once; the server is `active`. When the wallet cannot pay "
            "that hour, 402 `insufficient_funds` and nothing is created."
        ),
        request=ServerCreateSerializer,
        responses={201: ServerSerializer},
    ),
)
class ServerListCreateView(api.ServiceListCreateView):
    metered = servers
    serializer_class = ServerSerializer
    filterset_class = api.status_filter(Server)
    create_serializer_class = ServerCreateSerializer
    create = services.server_create


@extend_schema_view(
    get=extend_schema(summary="Show a server"),
    delete=extend_schema(
        summary="Terminate a server",
        description=(
            "The hour already paid is not refunded; no further charges. Terminating twice is harmless."
        ),
        responses={200: ServerSerializer},
    ),
)
class ServerDetailView(api.ServiceDetailView):
    metered = servers
    serializer_class = ServerSerializer
