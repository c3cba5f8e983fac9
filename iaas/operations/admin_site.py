"""The operator console's admin site: Django's, plus the second factor.

``OperatorAdminConfig`` replaces ``django.contrib.admin`` in INSTALLED_APPS and makes
``admin.site`` an ``OperatorAdminSite``, so every ModelAdmin and admin view the contexts
register is behind the same check. An operator who owes a second factor
(iaas.operations.second_factor) is sent from any admin page to the code step, or to
set-up when they have nothing enrolled yet; until then they may only log out.
"""

from __future__ import annotations

from functools import update_wrapper
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect


class OperatorAdminConfig(AdminConfig):
    default_site = "iaas.operations.admin_site.OperatorAdminSite"


def second_factor_pending(user) -> bool:
    # Imported when asked: this module is loaded with INSTALLED_APPS, before the models.
    from .second_factor import second_factor_pending

    return second_factor_pending(user)


def _signed_in_operator(request) -> bool:
    user = request.user
    return user.is_authenticated and user.is_active and user.is_staff


class OperatorAdminSite(admin.AdminSite):
    def has_permission(self, request) -> bool:
        # Every admin page, and each_context's navigation, asks this.
        return super().has_permission(request) and not second_factor_pending(request.user)

    def second_factor_redirect(self, request) -> HttpResponseRedirect:
        from django_otp import user_has_device

        step = "otp_verify" if user_has_device(request.user, confirmed=True) else "otp_setup"
        target = reverse(f"admin:{step}", current_app=self.name)
        query = urlencode({REDIRECT_FIELD_NAME: request.get_full_path()})
        return HttpResponseRedirect(f"{target}?{query}")

    def admin_view(self, view, cacheable=False):
        checked = super().admin_view(view, cacheable)
        # Log out stays open to an operator stopped at the second factor.
        unchecked = csrf_protect(never_cache(view))

        def inner(request, *args, **kwargs):
            if _signed_in_operator(request) and second_factor_pending(request.user):
                if request.path == reverse("admin:logout", current_app=self.name):
                    return unchecked(request, *args, **kwargs)
                return self.second_factor_redirect(request)
            return checked(request, *args, **kwargs)

        return update_wrapper(inner, view)

    def login(self, request, extra_context=None):
        if request.method == "GET" and _signed_in_operator(request) and second_factor_pending(request.user):
            return self.second_factor_redirect(request)
        return super().login(request, extra_context)

    def get_urls(self):
        from . import second_factor_views as views

        return [
            path("otp/", self.second_factor_view(views.otp_verify), name="otp_verify"),
            path("otp/setup/", self.second_factor_view(views.otp_setup), name="otp_setup"),
            path(
                "otp/recovery-codes/",
                self.second_factor_view(views.recovery_codes),
                name="otp_recovery_codes",
            ),
            *super().get_urls(),
        ]

    def second_factor_view(self, view):
        """The second factor's own pages: for a signed-in operator, verified or not."""

        def inner(request, *args, **kwargs):
            if not _signed_in_operator(request):
                login = reverse("admin:login", current_app=self.name)
                query = urlencode({REDIRECT_FIELD_NAME: request.get_full_path()})
                return HttpResponseRedirect(f"{login}?{query}")
            request.current_app = self.name
            return view(request, *args, site=self, **kwargs)

        return update_wrapper(csrf_protect(never_cache(inner)), view)
