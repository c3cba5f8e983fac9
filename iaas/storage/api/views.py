"""Storage's customer API: the kit's metered-service views (iaas.spending.api) over
Storage's services and selectors, and growing a volume."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.response import Response

from iaas.spending import api

from .. import selectors, services
from ..models import Volume
from ..spending import volumes
from .serializers import (
    VolumeCreateSerializer,
    VolumePlanSerializer,
    VolumeResizeSerializer,
    VolumeSerializer,
)


@extend_schema_view(get=extend_schema(summary="List the volume plans"))
class PlanListView(api.PlanListView):
    serializer_class = VolumePlanSerializer
    plans = selectors.plan_list


@extend_schema_view(
    get=extend_schema(summary="List your volumes"),
    post=extend_schema(
        summary="Buy a volume",
        description=(
            "The first hour is spent at once out of the wallet (its size times the plan's GB-month "
            "price over 730 hours, rounded once per month); the volume is `active`. When the wallet "
            "cannot pay, 402 `insufficient_funds` and nothing is created."
        ),
        request=VolumeCreateSerializer,
        responses={201: VolumeSerializer},
    ),
)
class VolumeListCreateView(api.ServiceListCreateView):
    metered = volumes
    serializer_class = VolumeSerializer
    filterset_class = api.status_filter(Volume)
    create_serializer_class = VolumeCreateSerializer
    create = services.volume_create


@extend_schema_view(
    get=extend_schema(summary="Show a volume"),
    patch=extend_schema(
        summary="Grow a volume",
        description=(
            "An active volume only grows. The bigger size accrues from now on: the rest of the hour "
            "already paid is spent at once for the added GB (402 `insufficient_funds` when the wallet "
            "cannot pay it, and nothing changes), and the month's cap becomes a full month at the new "
            "size: the month costs its GB-hours up to it, the hours the old cap had left free included. "
            "A suspended volume does not grow (409 `invalid_state`)."
        ),
        request=VolumeResizeSerializer,
        responses={200: VolumeSerializer},
    ),
    delete=extend_schema(
        summary="Delete a volume",
        description=(
            "The hour already paid is not refunded; nothing more accrues. Deleting twice is harmless."
        ),
        responses={200: VolumeSerializer},
    ),
)
class VolumeDetailView(api.ServiceDetailView):
    metered = volumes
    serializer_class = VolumeSerializer
    problem_codes = {
        "patch": {
            402: ["insufficient_funds"],
            404: ["not_found"],
            409: ["currency_mismatch", "invalid_state", "wallet_not_active"],
        }
    }

    def patch(self, request, pk):
        volume = self.get_object()
        serializer = VolumeResizeSerializer(data=request.data, context={"volume": volume})
        serializer.is_valid(raise_exception=True)
        volume = services.volume_resize(
            volume_id=volume.pk, owner_id=request.user.pk, size_gb=serializer.validated_data["size_gb"]
        )
        return Response(self.get_serializer(volume).data)
