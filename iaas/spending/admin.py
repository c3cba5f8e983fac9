"""Admin pieces for the sold services of every selling context: their suspension causes
(who stopped the service, why, since when) and the clock that ends it."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .models import AbstractSuspendable, SuspensionCause


class SuspensionCausesFilter(admin.SimpleListFilter):
    title = "suspension cause"
    parameter_name = "cause"

    def lookups(self, request, model_admin):
        return SuspensionCause.choices

    def queryset(self, request, queryset):
        if self.value() in SuspensionCause.values:
            field = AbstractSuspendable.CAUSE_FIELDS[SuspensionCause(self.value())]
            return queryset.filter(**{f"{field}__isnull": False})
        return queryset


class SuspendableAdminMixin:
    """Columns showing a service's suspension causes and when the batch run ends it.
    ``ends_at`` is the context's function (service -> datetime | None)."""

    ends_at: Callable[[AbstractSuspendable], object] = staticmethod(lambda service: None)
    ends_label = "terminates at"

    @admin.display(description="suspension causes")
    def causes_column(self, obj: AbstractSuspendable):
        causes = obj.suspension_causes
        if not causes:
            return "-"
        rows = []
        for cause in causes:
            since = getattr(obj, AbstractSuspendable.CAUSE_FIELDS[SuspensionCause(cause)])
            label = SuspensionCause(cause).label
            if cause == SuspensionCause.OPERATOR:
                label = f"{label}: {obj.operator_reason}"
            rows.append((label, timezone.localtime(since).strftime("%Y-%m-%d %H:%M")))
        return format_html(
            '<ul class="iaas-links">{}</ul>', format_html_join("", "<li>{} (since {})</li>", rows)
        )

    @admin.display(description="ends at (unpaid)")
    def ends_at_column(self, obj: AbstractSuspendable):
        moment = type(self).ends_at(obj)
        return "-" if moment is None else timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")
