"""The customer's email settings: thin views over iaas.notifications.emails."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from iaas.api.idempotency import idempotent

from .. import emails
from .email_serializers import EmailSettingsSerializer, EmailSettingsUpdateSerializer

TAGS = ["notifications"]


def _throttled(error: emails.VerificationTooSoon) -> exceptions.Throttled:
    return exceptions.Throttled(
        wait=error.wait_seconds, detail="A verification link was sent less than a minute ago; retry later."
    )


class EmailSettingsView(APIView):
    problem_codes = {"put": {429: ["throttled"]}}

    @extend_schema(tags=TAGS, summary="Show your email settings", responses={200: EmailSettingsSerializer})
    def get(self, request):
        return Response(EmailSettingsSerializer(emails.settings_for(request.user.pk)).data)

    @extend_schema(
        tags=TAGS,
        summary="Change your email settings",
        description=(
            "Replaces every field. A new address is unverified (nothing but the verification "
            "link goes to it until it is opened) and its link is sent at once: at most one link "
            "a minute, so changing the address again within a minute is a 429 `throttled`."
        ),
        request=EmailSettingsUpdateSerializer,
        responses={200: EmailSettingsSerializer},
    )
    def put(self, request):
        serializer = EmailSettingsUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            row = emails.email_settings_update(owner_id=request.user.pk, **serializer.validated_data)
        except emails.VerificationTooSoon as error:
            raise _throttled(error) from None
        return Response(EmailSettingsSerializer(row).data)


class EmailVerifyView(APIView):
    problem_codes = {"post": {409: ["invalid_state"], 429: ["throttled"]}}

    @extend_schema(
        tags=TAGS,
        summary="Send the verification link again",
        description=(
            "To the current address, at most once a minute (429 `throttled` with Retry-After). "
            "409 `invalid_state` when the address is verified already."
        ),
        request=None,
        responses={202: EmailSettingsSerializer},
    )
    @idempotent
    def post(self, request):
        try:
            row = emails.verification_resend(owner_id=request.user.pk)
        except emails.VerificationTooSoon as error:
            raise _throttled(error) from None
        return Response(EmailSettingsSerializer(row).data, status=status.HTTP_202_ACCEPTED)
