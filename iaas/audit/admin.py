"""The history in the operator console: a "History of changes" section any ModelAdmin
gets by mixing in ``ChangeHistoryAdmin``, the read-only list of every change, and the
customers' page (auth's UserAdmin) recording the operator's changes of a user's groups
and access flags.

Imports no other iaas package (``iaas.spending.admin`` imports this one), so the
history stays a leaf every context's admin can use.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from .models import ChangeRecord
from .selectors import changes_of
from .services import object_type, record_change

HISTORY_ON_PAGE = 20
HISTORY_FIELD = "change_history"


def show_value(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)


def changes_list(record: ChangeRecord) -> str:
    """``price_per_hour: 1 → 2`` per changed field."""
    keys = list(dict.fromkeys([*record.before, *record.after]))
    if not keys:
        return "—"
    return format_html(
        '<ul class="iaas-changes">{}</ul>',
        format_html_join(
            "",
            "<li><code>{}</code>: {} → {}</li>",
            ((key, show_value(record.before.get(key)), show_value(record.after.get(key))) for key in keys),
        ),
    )


def who(record: ChangeRecord) -> str:
    if record.actor_id is None:
        return record.actor_label or "system"
    username = record.actor.get_username()
    try:
        url = reverse("admin:auth_user_change", args=[record.actor_id])
    except NoReverseMatch:
        return username
    return format_html('<a href="{}">{}</a>', url, username)


def history_url(obj_type: str, obj_id) -> str:
    return (
        reverse("admin:audit_changerecord_changelist")
        + "?"
        + urlencode({"obj_type": obj_type, "obj_id": str(obj_id)})
    )


class ChangeHistoryAdmin:
    """Mix into a ModelAdmin (before it in the bases) to show the object's history of
    changes, newest first, in a section of its own at the end of its change page. One
    statement per page view."""

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, HISTORY_FIELD) if obj is not None else fields

    def get_fields(self, request, obj=None):
        # Its own section (below), not a row among the object's fields.
        return [name for name in super().get_fields(request, obj) if name != HISTORY_FIELD]

    def get_fieldsets(self, request, obj=None):
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None:
            fieldsets.append(("History of changes", {"fields": (HISTORY_FIELD,)}))
        return fieldsets

    @admin.display(description="changes")
    def change_history(self, obj):
        kind = object_type(obj)
        records = list(changes_of(obj_type=kind, obj_id=obj.pk)[: HISTORY_ON_PAGE + 1])
        if not records:
            return format_html("<p>{}</p>", "No changes recorded.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    record.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
                    who(record),
                    record.action,
                    changes_list(record),
                    record.reason or "—",
                )
                for record in records[:HISTORY_ON_PAGE]
            ),
        )
        more = (
            format_html('<p><a href="{}">Older changes</a></p>', history_url(kind, obj.pk))
            if len(records) > HISTORY_ON_PAGE
            else ""
        )
        return format_html(
            '<table class="iaas-table iaas-history"><thead><tr><th>when</th><th>who</th>'
            "<th>action</th><th>before → after</th><th>reason</th></tr></thead>"
            "<tbody>{}</tbody></table>{}",
            rows,
            more,
        )


@admin.register(ChangeRecord)
class ChangeRecordAdmin(admin.ModelAdmin):
    """Every recorded change, read-only (the table refuses UPDATE and DELETE anyway)."""

    list_display = ("occurred_at", "object_link", "action", "who_column", "changes", "reason")
    list_filter = (
        "obj_type",
        ("actor", admin.RelatedOnlyFieldListFilter),
        "actor_label",
        "occurred_at",
    )
    search_fields = ("=obj_id",)
    search_help_text = "An object's id (exact), e.g. a plan id or a wallet id."
    date_hierarchy = "occurred_at"
    list_select_related = ("actor",)
    ordering = ("-occurred_at", "-id")
    fields = (
        "occurred_at",
        "object_link",
        "action",
        "who_column",
        "changes",
        "reason",
        "before",
        "after",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="object", ordering="obj_type")
    def object_link(self, record: ChangeRecord):
        text = f"{record.obj_type} {record.obj_id}"
        app_label, _, model = record.obj_type.partition(".")
        try:
            url = reverse(f"admin:{app_label}_{model}_change", args=[record.obj_id])
        except NoReverseMatch:
            return text
        return format_html('<a href="{}">{}</a>', url, text)

    @admin.display(description="who", ordering="actor_label")
    def who_column(self, record: ChangeRecord):
        return who(record)

    @admin.display(description="before → after")
    def changes(self, record: ChangeRecord):
        return changes_list(record)


# --- The customers' and operators' accounts -------------------------------------------------

User = get_user_model()
# Access an operator grants or takes away on a user's page, recorded as one change.
ACCESS_FLAGS = ("is_active", "is_staff", "is_superuser")


def group_names(user) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


class AuditedUserAdmin(ChangeHistoryAdmin, UserAdmin):
    """auth's UserAdmin, recording each save that changes a user's groups or access
    flags as one change (``change_access``) by the operator, in the admin's
    transaction. Recorded here rather than on ``m2m_changed``: a signal does not know
    the operator, and one save that removes a group and adds another fires two."""

    def save_related(self, request, form, formsets, change):
        user = form.instance
        # The flags as stored: the form's initial data is the row it was bound to.
        before = {flag: form.initial.get(flag) for flag in ACCESS_FLAGS if flag in form.fields}
        before["groups"] = group_names(user) if change else []
        super().save_related(request, form, formsets, change)
        after = {flag: getattr(user, flag) for flag in before if flag != "groups"}
        after["groups"] = group_names(user)
        changed = [key for key in before if before[key] != after[key]]
        if changed:
            record_change(
                obj_type=object_type(user),
                obj_id=user.pk,
                action="change_access",
                before={key: before[key] for key in changed},
                after={key: after[key] for key in changed},
                actor_id=request.user.pk,
                actor_label=request.user.get_username(),
            )


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
