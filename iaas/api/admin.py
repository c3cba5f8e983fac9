"""Customers' API keys for operators: who has which key, its scope, expiry and last use,
read-only (a key's secret is never stored, and its digest is not shown either), with a
revoke action for a key that leaked."""

from __future__ import annotations

from django.contrib import admin, messages

from iaas.common.admin import ReadOnlyAdmin, user_link

from . import keys
from .models import ApiKey


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "active"), ("revoked", "revoked"))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at=None)
        if self.value() == "revoked":
            return queryset.exclude(revoked_at=None)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "prefix",
        "scope",
        "owner_link",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = (ActiveFilter, "scope", "created_at")
    list_select_related = ("owner",)
    search_fields = ("name", "prefix", "owner__username", "owner__email")
    search_help_text = "Key name, its first characters, or the customer's username or email."
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = (
        "id",
        "name",
        "prefix",
        "scope",
        "owner_link",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ("revoke_keys",)
    object_actions = (("revoke_keys", "Revoke this key"),)

    def has_revoke_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("api.revoke_apikey")

    @admin.display(description="customer", ordering="owner__username")
    def owner_link(self, obj):
        return user_link(obj.owner)

    @admin.action(description="Revoke the selected keys (they stop working at once)", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        chosen = list(queryset.filter(revoked_at=None))
        revoked = keys.api_keys_revoke(key_ids=[key.pk for key in chosen])
        for api_key in chosen:
            self.log_change(request, api_key, f"Revoked (by {request.user.get_username()})")
        self.message_user(
            request,
            f"Revoked {revoked} key(s)." if revoked else "Nothing to revoke: the selected keys were revoked.",
            messages.SUCCESS if revoked else messages.INFO,
        )
        return self.back(request)
