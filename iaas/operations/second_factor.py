"""Operators' second factor: who must have one, enrolment of an authenticator app (TOTP)
with its one-time recovery codes, and the check of a code at login. django-otp keeps the
devices and verifies the codes (throttling repeated failures, refusing a TOTP code
already used); this module decides the policy and the steps.

Superusers and the Finance group move money, so they must pass a second factor before
any admin page. Others (Support) may enrol; once an operator has enrolled, the second
factor is asked of them too, or enrolling would protect nothing.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_otp import devices_for_user, user_has_device, verify_token
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from .roles import FINANCE, FINANCE_PERMISSIONS

AUTHENTICATOR = "authenticator app"
RECOVERY_CODES = "recovery codes"


def second_factor_required(user) -> bool:
    """Superusers and Finance operators (and anyone granted Finance's money permissions
    some other way) may not reach the admin on a password alone."""
    if user.is_superuser:
        return True
    if user.groups.filter(name=FINANCE).exists():
        return True
    return any(user.has_perm(f"{app}.{codename}") for app, codename in FINANCE_PERMISSIONS)


def second_factor_pending(user) -> bool:
    """True while a signed-in operator still owes their second factor in this session.
    Cached on the request's user object: the admin asks several times per page."""
    cached = getattr(user, "_iaas_second_factor_pending", None)
    if cached is not None:
        return cached
    is_verified = getattr(user, "is_verified", None)  # installed by OTPMiddleware
    verified = bool(is_verified and is_verified())
    pending = not verified and (second_factor_required(user) or user_has_device(user, confirmed=True))
    user._iaas_second_factor_pending = pending
    return pending


def has_authenticator(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def recovery_codes_left(user) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def authenticator_enrolment_start(*, user) -> TOTPDevice:
    """The unconfirmed authenticator an operator is setting up: the same one until they
    confirm it with a code, so reloading the page does not change the QR code."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False, name=AUTHENTICATOR).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, confirmed=False, name=AUTHENTICATOR)
    return device


def authenticator_enrolment_confirm(*, user, device: TOTPDevice, token: str) -> list[str] | None:
    """Confirm the authenticator with one of its codes. Answers the new recovery codes
    (to be shown once), or None when the code is wrong (nothing changes)."""
    if device.user_id != user.pk or device.confirmed:
        return None
    if not device.verify_token(token.strip()):
        return None
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        return recovery_codes_issue(user=user)


def recovery_codes_issue(*, user) -> list[str]:
    """Replace the operator's recovery codes with a fresh set: each works once."""
    with transaction.atomic():
        StaticDevice.objects.filter(user=user).delete()
        device = StaticDevice.objects.create(user=user, name=RECOVERY_CODES, confirmed=True)
        codes = [StaticToken.random_token() for _ in range(settings.IAAS_OTP_RECOVERY_CODES)]
        StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def second_factor_wait(user) -> int:
    """Seconds until the operator's devices accept codes again after wrong ones (0: now).
    django-otp doubles the wait with each failure in a row."""
    now = timezone.now()
    waits = [0.0]
    for device in devices_for_user(user, confirmed=True):
        allowed, why = device.verify_is_allowed()
        if not allowed and why and why.get("locked_until"):
            waits.append((why["locked_until"] - now).total_seconds())
    return max(0, math.ceil(max(waits)))


def second_factor_verify(*, user, token: str) -> Device | None:
    """The confirmed device (authenticator or recovery codes) that accepts this code, or
    None. A recovery code is used up by the match; each device throttles failures."""
    token = "".join(token.split()).lower()
    if not token:
        return None
    for device in devices_for_user(user, confirmed=True):
        is_app_code = token.isdigit() and len(token) == getattr(device, "digits", 0)
        if isinstance(device, TOTPDevice) != is_app_code:
            continue  # an app code never counts as a wrong recovery code, nor the reverse
        # django-otp locks the device row while it checks, so two requests cannot both
        # spend one recovery code or both beat the failure throttle.
        verified = verify_token(user, device.persistent_id, token)
        if verified is not None:
            return verified
    return None
