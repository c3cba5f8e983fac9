"""The customer's API keys: list them, make one (its key shown once), revoke one."""

from __future__ import annotations

from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from . import keys
from .fields import StrictCharField, StrictChoiceField
from .models import ApiKey


class ApiKeySerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(
        read_only=True, help_text="The key's first characters, to tell keys apart; not the key."
    )
    expires_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When the key stops working; null: until revoked."
    )
    last_used_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the key was last used, to the minute (recorded at most once a minute).",
    )
    revoked_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When the key was revoked; null while it is not."
    )

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "scope", "created_at", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class IssuedApiKeySerializer(ApiKeySerializer):
    key = serializers.SerializerMethodField(
        help_text="The key, shown this once and never again: send it as `Authorization: Token <key>`."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_key(self, api_key) -> str:
        return self.context["key"]


class ApiKeyCreateSerializer(serializers.Serializer):
    name = StrictCharField(
        min_length=1, max_length=keys.NAME_MAX_LENGTH, help_text="What the key is for, for you."
    )
    scope = StrictChoiceField(
        choices=ApiKey.Scope.choices,
        help_text="`read`: safe methods (GET) only, any other is a 403; `read_write`: everything.",
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When the key stops working (in the future, with a time zone); null or absent: never.",
    )

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value


class ApiKeyListCreateView(generics.ListAPIView):
    serializer_class = ApiKeySerializer
    filter_backends = []

    def get_queryset(self):
        return keys.api_key_list(owner_id=self.request.user.pk)

    @extend_schema(tags=["accounts"], summary="List your API keys (not the revoked ones)")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["accounts"],
        summary="Make an API key",
        description=(
            "The answer holds the key, this once: it is stored only hashed. An `Idempotency-Key` "
            "is not honoured here: replaying the answer would mean storing the key in plain text; "
            "revoke a key a retried request made twice."
        ),
        request=ApiKeyCreateSerializer,
        responses={201: IssuedApiKeySerializer},
    )
    def post(self, request):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = keys.api_key_create(owner_id=request.user.pk, **serializer.validated_data)
        body = IssuedApiKeySerializer(issued.api_key, context={"key": issued.key}).data
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(APIView):
    @extend_schema(
        tags=["accounts"],
        summary="Revoke an API key",
        description=(
            "The key stops working at once (its next request is a 401). Revoking a revoked key "
            "changes nothing."
        ),
        responses={200: ApiKeySerializer},
    )
    def delete(self, request, pk):
        try:
            api_key = keys.api_key_revoke(owner_id=request.user.pk, key_id=pk)
        except ApiKey.DoesNotExist:
            raise Http404 from None
        return Response(ApiKeySerializer(api_key).data)
