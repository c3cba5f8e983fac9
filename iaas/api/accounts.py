"""Registration and token issue: the two endpoints anyone may call, rate-limited per
client address. Each answers a new ``read_write`` API key (``keys``), shown this once:
registration's is named "registration", each login's "login <date> <time> UTC".
Registration publishes CustomerRegistered in the transaction that creates the user."""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model, password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from iaas.contracts import bus
from iaas.contracts.events import CustomerRegistered

from . import keys
from .fields import StrictCharField
from .problems import ProblemError
from .throttles import RegisterThrottle, TokenThrottle

User = get_user_model()


class UsernameTaken(ProblemError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "username_taken"
    default_detail = "That username is taken."


class InvalidCredentials(exceptions.AuthenticationFailed):
    default_detail = "Unable to log in with the credentials given."


class RegisterSerializer(serializers.Serializer):
    username = StrictCharField(
        min_length=1,
        max_length=150,
        validators=[UnicodeUsernameValidator()],
        help_text="Letters, digits and @ . + - _ only; 150 characters at most.",
    )
    email = serializers.EmailField(max_length=254)
    password = StrictCharField(
        write_only=True,
        min_length=8,
        max_length=128,
        # Not all digits; Django's validators also refuse common passwords and ones like the
        # username or email (which no pattern can say).
        validators=[RegexValidator(r"\D", message="This password is entirely numeric.")],
        help_text="8 to 128 characters, not all digits, not a common password, not like the username.",
    )

    def validate(self, attrs):
        candidate = User(username=attrs["username"], email=attrs["email"])
        try:
            password_validation.validate_password(attrs["password"], user=candidate)
        except DjangoValidationError as error:
            raise serializers.ValidationError({"password": list(error.messages)}) from None
        return attrs


class TokenRequestSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(write_only=True, max_length=128)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="A new `read_write` API key, shown this once: send it as `Authorization: Token <token>`."
    )


class PublicView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]


class RegisterView(PublicView):
    throttle_classes = [RegisterThrottle]
    problem_codes = {"post": {409: ["username_taken"]}}

    @extend_schema(
        tags=["accounts"],
        summary="Register a customer",
        request=RegisterSerializer,
        responses={201: TokenSerializer},
    )
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if User.objects.filter(username__iexact=data["username"]).exists():
            raise UsernameTaken()
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    username=data["username"], email=data["email"], password=data["password"]
                )
                # With the user, or not at all: the address is to be verified (iaas.notifications).
                bus.publish(CustomerRegistered(owner_id=user.pk, username=user.username, email=user.email))
                issued = keys.api_key_create(owner_id=user.pk, name="registration")
        except IntegrityError:  # registered by a concurrent request
            raise UsernameTaken() from None
        return Response({"token": issued.key}, status=status.HTTP_201_CREATED)


class TokenView(PublicView):
    throttle_classes = [TokenThrottle]
    problem_codes = {"post": {401: ["not_authenticated"]}}

    def get_authenticate_header(self, request):
        return 'Token realm="api"'

    @extend_schema(
        tags=["accounts"],
        summary="Log in: issue a new API key",
        description=(
            "Each call makes a new `read_write` API key named after the login (`login 2026-11-29 "
            "20:15 UTC`), valid until revoked, and answers it this once. List and revoke keys at "
            "`/api/v1/auth/keys/`."
        ),
        request=TokenRequestSerializer,
        responses={200: TokenSerializer},
    )
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request=request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            raise InvalidCredentials()
        name = f"login {timezone.now():%Y-%m-%d %H:%M} UTC"
        issued = keys.api_key_create(owner_id=user.pk, name=name)
        return Response({"token": issued.key})
