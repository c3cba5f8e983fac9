"""The admin login's attempt limits, as django-axes asks for them: the client's address
(the same one the API's throttles use) and the page a locked-out operator sees.

django-axes counts the failures (settings: AXES_*) and keeps them in its AccessAttempt
table; an operator unlocks an account or an address by deleting its attempts in the
admin (Axes > Access attempts) or with ``manage.py axes_reset_username`` / ``axes_reset_ip``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse


def client_address(request: HttpRequest) -> str | None:
    """The socket's address, or, behind IAAS_NUM_PROXIES trusted proxies, the address the
    outermost of them saw (as REST framework's throttles decide), so a client cannot
    pick a fresh address for every attempt with an X-Forwarded-For header."""
    remote = request.META.get("REMOTE_ADDR")
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    return hops[-min(proxies, len(hops))] if hops else remote


def outside_the_admin(request: HttpRequest, credentials=None) -> bool:
    """Logins elsewhere (the API's token endpoint) are neither counted nor locked here:
    the API has its own throttles and answers problem+json. (AXES_ONLY_ADMIN_SITE alone
    still records their failures.)"""
    return not request.path.startswith(reverse("admin:index"))


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """A page in the console's look saying what happened and when to try again: 429."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60) if settings.AXES_COOLOFF_TIME else None
    context = {
        **admin.site.each_context(request),
        "title": "Too many failed logins",
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cooloff_minutes": minutes,
    }
    response = TemplateResponse(request, "admin/operations/locked_out.html", context, status=429)
    if minutes:
        response["Retry-After"] = str(minutes * 60)
    return response.render()
