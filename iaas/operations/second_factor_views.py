"""The second factor's admin pages (URLs from OperatorAdminSite.get_urls):

- ``admin:otp_verify`` (/admin/otp/): the code step after the password;
- ``admin:otp_setup`` (/admin/otp/setup/): enrol an authenticator app (QR code, secret,
  one code to confirm), or, once enrolled, its status and new recovery codes;
- ``admin:otp_recovery_codes`` (/admin/otp/recovery-codes/): the codes just issued,
  shown once.

Thin: the policy and the writes are in iaas.operations.second_factor."""

from __future__ import annotations

from base64 import b32encode
from urllib.parse import urlencode

import qrcode
import qrcode.image.svg
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_static.models import StaticDevice

from . import second_factor

SHOWN_ONCE_SESSION_KEY = "iaas_recovery_codes_to_show"


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True}),
    )


def _next_url(request, site) -> str:
    target = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME)
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("admin:index", current_app=site.name)


def _with_next(request, site, name: str) -> str:
    query = urlencode({REDIRECT_FIELD_NAME: _next_url(request, site)})
    return f"{reverse(name, current_app=site.name)}?{query}"


def _page(request, site, template: str, title: str, **context) -> TemplateResponse:
    return TemplateResponse(
        request,
        f"admin/operations/{template}",
        {
            **site.each_context(request),
            "title": title,
            "next": _next_url(request, site),
            "required": second_factor.second_factor_required(request.user),
            "recovery_code_count": settings.IAAS_OTP_RECOVERY_CODES,
            **context,
        },
    )


def _verified(request, device) -> None:
    # A new session key for the stronger session (as login() does for the password).
    request.session.cycle_key()
    otp_login(request, device)


@require_http_methods(["GET", "POST"])
def otp_verify(request, *, site):
    user = request.user
    if not second_factor.second_factor_pending(user):
        return HttpResponseRedirect(_next_url(request, site))
    if not second_factor.has_authenticator(user) and not second_factor.recovery_codes_left(user):
        return redirect(_with_next(request, site, "admin:otp_setup"))
    form = CodeForm(request.POST or None)
    if form.is_valid():
        throttled = second_factor.second_factor_wait(user) > 0  # the code came too soon
        device = second_factor.second_factor_verify(user=user, token=form.cleaned_data["code"])
        if device is not None:
            _verified(request, device)
            if isinstance(device, StaticDevice):
                left = second_factor.recovery_codes_left(user)
                messages.warning(
                    request,
                    f"Recovery code accepted; it will not work again. {left} left: generate new "
                    "ones from Two-factor authentication when you run low.",
                )
            return HttpResponseRedirect(_next_url(request, site))
        form.add_error(
            "code",
            f"Too many wrong codes: wait {second_factor.second_factor_wait(user)} seconds, then "
            "enter the code your app shows."
            if throttled
            else "That code is not valid, or was already used. Enter the next code of your app, "
            "or a recovery code (after each wrong code the next try waits longer).",
        )
    return _page(request, site, "otp_verify.html", "Two-factor authentication", form=form)


@require_http_methods(["GET", "POST"])
def otp_setup(request, *, site):
    user = request.user
    if second_factor.second_factor_pending(user) and user_has_device(user, confirmed=True):
        # Enrolled already (an app, or recovery codes left): prove it before changing anything.
        return redirect(_with_next(request, site, "admin:otp_verify"))
    if second_factor.has_authenticator(user):
        return _page(
            request,
            site,
            "otp_status.html",
            "Two-factor authentication",
            recovery_codes_left=second_factor.recovery_codes_left(user),
        )
    device = second_factor.authenticator_enrolment_start(user=user)
    form = CodeForm(request.POST or None)
    if form.is_valid():
        codes = second_factor.authenticator_enrolment_confirm(
            user=user, device=device, token=form.cleaned_data["code"]
        )
        if codes is not None:
            _verified(request, device)
            request.session[SHOWN_ONCE_SESSION_KEY] = codes
            return redirect(_with_next(request, site, "admin:otp_recovery_codes"))
        form.add_error(
            "code", "That code does not match: check the app shows this account, and enter its current code."
        )
    uri = device.config_url
    return _page(
        request,
        site,
        "otp_setup.html",
        "Set up two-factor authentication",
        form=form,
        otpauth_uri=uri,
        secret=" ".join(_groups(b32encode(device.bin_key).decode(), 4)),
        qr_svg=_qr_svg(uri),
    )


@require_http_methods(["GET", "POST"])
def recovery_codes(request, *, site):
    user = request.user
    if request.method == "POST":
        if second_factor.second_factor_pending(user) or not second_factor.has_authenticator(user):
            return redirect(_with_next(request, site, "admin:otp_setup"))
        request.session[SHOWN_ONCE_SESSION_KEY] = second_factor.recovery_codes_issue(user=user)
        return redirect(_with_next(request, site, "admin:otp_recovery_codes"))
    codes = request.session.pop(SHOWN_ONCE_SESSION_KEY, None)
    if codes is None:  # shown already: never again
        return redirect(_with_next(request, site, "admin:otp_setup"))
    return _page(request, site, "otp_recovery_codes.html", "Your recovery codes", codes=codes)


def _groups(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _qr_svg(data: str) -> str:
    """The otpauth URI as an inline SVG QR code (qrcode draws SVG without Pillow)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    return mark_safe(image.to_string(encoding="unicode"))  # noqa: S308 - our own drawing of a URI
