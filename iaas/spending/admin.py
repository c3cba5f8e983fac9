"""The selling kit's admin: the base admins a selling context's admin registers its
models with. Its catalog of plans, what customers bought (a server, a subscription)
with their suspension causes (who stopped the service, why, since when) and the clock
that ends it, and its spending tables (allowance, usage, charges, releases).

Knows no context: pages are reached by URL name (``iaas.common.admin``'s links), the
context's own pieces (its services, the model a charge pays for) are class attributes
its subclasses set.
"""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from iaas.audit.admin import ChangeHistoryAdmin
from iaas.audit.services import object_type, record_change
from iaas.common.admin import (
    OperatorAdmin,
    ReadOnlyAdmin,
    admin_url,
    link,
    links_list,
    money_column,
    user_link,
    wallet_link,
)
from iaas.contracts.types import format_minor_units

from .models import AbstractSuspendable, SuspensionCause

# --- Suspension causes of what customers bought -------------------------------------------------


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
        moment = self.ends_at(obj)
        if moment is None:
            return "-"
        shown = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")
        if obj.end_warned_at is None:
            return shown
        # The owner was told (ServiceEndsSoon): an operator answering them sees when.
        return f"{shown} (owner warned {timezone.localtime(obj.end_warned_at):%Y-%m-%d %H:%M})"


# --- The selling contexts' catalogs and what customers bought -----------------------------------


class CatalogPlanForm(forms.ModelForm):
    """A plan of a selling context's catalog, priced in a currency the project supports."""

    currency = forms.ChoiceField(choices=[])

    PRICE_HELP = (
        "A change applies from the next charge (the next hour metered, the next month "
        "renewed); what customers were charged before stays as it was."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "currency" in self.fields:  # read-only (absent) once the plan exists
            self.fields["currency"].choices = [(c, c) for c in settings.IAAS_SUPPORTED_CURRENCIES]
        for name, field in self.fields.items():
            if name.startswith("price"):
                field.help_text = f"{field.help_text} {self.PRICE_HELP}".strip()


class CatalogAdmin(ChangeHistoryAdmin, OperatorAdmin):
    """A selling context's catalog. A plan's id and currency are fixed once the plan
    exists (servers and subscriptions of the plan are billed in its currency, from their
    wallet in that currency: to sell in another currency, create a new plan); plans are
    retired (``is_active``), never deleted: what customers bought points at them. Its
    form is a ``CatalogPlanForm``. Every save that creates a plan or changes its fields
    (a price, ``is_active``) is recorded in the plan's history, with the operator and
    the changed fields only, in the admin's transaction."""

    list_filter = ("is_active", "currency")
    search_fields = ("id", "name")

    def get_readonly_fields(self, request, obj=None):
        fixed = ("id", "currency") if obj is not None else ()
        return (*super().get_readonly_fields(request, obj), *fixed)

    def save_model(self, request, obj, form, change):
        fields = form.changed_data if change else list(form.fields)
        if change and not fields:
            return super().save_model(request, obj, form, change)
        # The form's initial data is the row as stored when the form was bound.
        before = {name: form.initial.get(name) for name in fields} if change else {}
        super().save_model(request, obj, form, change)
        after = {name: _field_value(obj, form, name) for name in fields}
        if not change:
            after = {"id": obj.pk, **after}
        record_change(
            obj_type=object_type(obj),
            obj_id=obj.pk,
            action="change" if change else "create",
            before=before,
            after=after,
            actor_id=request.user.pk,
            actor_label=request.user.get_username(),
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _field_value(obj, form, name: str):
    """A saved field's value as the form's initial data has it (a foreign key's id)."""
    try:
        return obj._meta.get_field(name).value_from_object(obj)
    except FieldDoesNotExist:  # a form field that is not a model field
        return form.cleaned_data.get(name)


class SoldServiceAdmin(SuspendableAdminMixin, ChangeHistoryAdmin, ReadOnlyAdmin):
    """What a customer bought from a selling context (a server, a subscription, a volume).
    Nobody edits it: operators suspend, resume and end it through the context's services,
    offered as actions that need ``operate_permission``. Its page follows the money to
    the wallet, the charges, the context's allowance and the events, shows the
    suspension causes and when the batch run ends the service (``ends_at``), and its
    history of changes (suspensions and their causes, recorded by the services).

    Who may lift which suspension:

    - "Suspend (operator hold)": the operator's own cause, with a reason; nothing ends a
      held service, and no batch run lifts the hold.
    - "Lift the operator hold": clears that cause only. A service also unpaid (or on a
      blocked wallet) stays suspended, and the batch run resumes it once the wallet pays.
    - "Resume, charging what is owed": lifts every cause and charges what the batch run
      would. A wallet that cannot pay refuses it, and nothing changes.
    - "Terminate", "Cancel", "Delete" (``end_label``): for good; ``end_warning`` says what
      it means for this kind of service.

    A subclass calls its context's services in ``suspend_one``, ``lift_operator_hold_one``,
    ``resume_one`` and ``end_one``."""

    # The permission the operator actions need ("cloud.change_server").
    operate_permission = ""
    list_select_related = ("owner", "plan")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    def has_operate_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(self.operate_permission)

    @staticmethod
    def operator_reason(request: HttpRequest) -> str:
        """The reason an operator's action gives its service (and its event)."""
        return f"operator:{request.user.get_username()}"

    @admin.display(description="owner", ordering="owner__username")
    def owner_column(self, obj):
        return user_link(obj.owner)

    @admin.display(description="wallet", ordering="wallet_id")
    def wallet(self, obj):
        return wallet_link(obj.wallet_id, "wallet")

    @admin.display(description="follow the money")
    def related(self, obj):
        return links_list(self.related_links(obj))

    def related_links(self, obj) -> list[tuple[str, str]]:
        label = self.opts.app_label
        return [
            (admin_url("billing_wallet_change", obj.wallet_id), "The customer's wallet"),
            (
                admin_url(f"{label}_charge_changelist", query={"subject_id": obj.pk}),
                f"Charges for this {self.opts.verbose_name}",
            ),
            (
                admin_url(f"{label}_allowance_changelist", query={"wallet_id": obj.wallet_id}),
                f"{label.capitalize()} allowance",
            ),
            (
                admin_url(
                    "contracts_outboxmessage_changelist",
                    query={"wallet_id": obj.wallet_id, "delivery": "all"},
                ),
                "Events about the wallet",
            ),
        ]

    end_label, end_done = "Terminate", "Terminated"
    end_warning = "The {plural} below are {ended} for good. The time already paid is not refunded."
    actions = ("suspend_services", "lift_operator_hold", "resume_services", "end_services")

    @property
    def object_actions(self):
        return (
            ("suspend_services", "Suspend (operator hold)"),
            ("lift_operator_hold", "Lift the operator hold"),
            ("resume_services", "Resume, charging what is owed"),
            ("end_services", self.end_label),
        )

    def suspend_one(self, obj, *, reason: str, actor_id: int):
        raise NotImplementedError

    def lift_operator_hold_one(self, obj, *, actor_id: int):
        raise NotImplementedError

    def resume_one(self, obj, *, actor_id: int):
        raise NotImplementedError

    def end_one(self, obj, *, reason: str):
        raise NotImplementedError

    @property
    def _plural(self) -> str:
        return str(self.opts.verbose_name_plural)

    @admin.action(
        description="Suspend the selected %(verbose_name_plural)s (operator hold)", permissions=["operate"]
    )
    def suspend_services(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title=f"Suspend {self._plural}",
            warning=f"The {self._plural} below stop until an operator lifts the hold. No batch run lifts "
            f"it, and nothing ends a held {self.opts.verbose_name}. The customer sees the cause, not the "
            "reason.",
            reason_label="Reason (kept with the suspension)",
        ):
            return response
        reason = f"{self.confirmed_reason(request)} ({self.operator_reason(request)})"
        return self.run_service(
            request,
            queryset,
            lambda obj: self.suspend_one(obj, reason=reason, actor_id=request.user.pk),
            done="Suspended",
        )

    @admin.action(
        description="Lift the operator hold of the selected %(verbose_name_plural)s", permissions=["operate"]
    )
    def lift_operator_hold(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda obj: self.lift_operator_hold_one(obj, actor_id=request.user.pk),
            done="Operator hold lifted",
        )

    @admin.action(
        description="Resume the selected %(verbose_name_plural)s, charging what is owed (lifts every cause)",
        permissions=["operate"],
    )
    def resume_services(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda obj: self.resume_one(obj, actor_id=request.user.pk),
            done="Resumed",
        )

    @admin.action(description="End the selected %(verbose_name_plural)s", permissions=["operate"])
    def end_services(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title=f"{self.end_label} {self._plural}",
            warning=self.end_warning.format(
                plural=self._plural, ended=getattr(self.model, "ENDED_STATUS", "ended")
            ),
        ):
            return response
        reason = self.operator_reason(request)
        return self.run_service(
            request,
            queryset,
            lambda obj: self.end_one(obj, reason=reason),
            done=self.end_done,
        )


class MeteredServiceAdmin(SoldServiceAdmin):
    """A metered service (a server, a volume): the operator actions call the kit's
    metered-service life (``metered``, its context's MeteredServices). A resume charges
    what bill_usage would: the hours the service ran unpaid before it stopped, then the
    hour from now unless a paid hour is still running; the suspended time is never
    charged. A subclass sets ``metered``, ``end_label``, ``end_done`` and
    ``operate_permission``, and may add columns (``extra_columns``)."""

    metered = None  # iaas.spending.metered.MeteredServices
    extra_columns: tuple[str, ...] = ()
    search_fields = ("name", "owner__username", "owner__email", "wallet_id", "id")

    def __init__(self, model, admin_site):
        super().__init__(model, admin_site)
        self.list_display = (
            "name",
            "owner_column",
            "plan",
            *self.extra_columns,
            "status",
            "causes_column",
            "ends_at_column",
            "paid_until",
            "wallet",
            "created_at",
        )
        self.list_filter = ("status", SuspensionCausesFilter, "plan", "created_at", "paid_until")
        self.readonly_fields = self.fields = (
            "id",
            "name",
            "owner_column",
            "wallet",
            "plan",
            *self.extra_columns,
            "status",
            "causes_column",
            "ends_at_column",
            "created_at",
            "paid_until",
            "suspended_at",
            model.ENDED_AT,
            "related",
        )
        noun = model._meta.verbose_name
        self.search_help_text = (
            f"{noun.capitalize()} name, customer username or email, wallet id or {noun} id."
        )

    def ends_at(self, obj):
        return self.metered.terminates_at(obj)

    def related_links(self, obj) -> list[tuple[str, str]]:
        usage = admin_url(f"{self.opts.app_label}_usage_changelist", query={"service_id": obj.pk})
        return [
            *super().related_links(obj),
            (usage, f"Usage of this {self.opts.verbose_name}, month by month"),
        ]

    def suspend_one(self, obj, *, reason: str, actor_id: int):
        return self.metered.suspend(service_id=obj.pk, reason=reason, actor_id=actor_id)

    def lift_operator_hold_one(self, obj, *, actor_id: int):
        return self.metered.lift_operator_hold(service_id=obj.pk, actor_id=actor_id)

    def resume_one(self, obj, *, actor_id: int):
        return self.metered.resume(service_id=obj.pk, actor_id=actor_id)

    def end_one(self, obj, *, reason: str):
        return self.metered.end(service_id=obj.pk, reason=reason)


# --- The selling contexts' spending tables ------------------------------------------------------


class WalletColumnsMixin:
    """The wallet and its owner as links: the columns every selling-side row shows."""

    @admin.display(description="wallet", ordering="wallet_id")
    def wallet(self, obj):
        return wallet_link(obj.wallet_id)

    @admin.display(description="owner", ordering="owner__username")
    def owner_column(self, obj):
        return user_link(obj.owner)


class AllowanceAdmin(WalletColumnsMixin, ReadOnlyAdmin):
    """A selling context's allowance per wallet (iaas.spending's AbstractAllowance)."""

    list_display = (
        "wallet",
        "owner_column",
        "currency",
        "amount_money",
        "granted_total_money",
        "charged_total_money",
        "released_total_money",
        "last_used_at",
    )
    list_filter = ("currency", "last_used_at")
    search_fields = ("wallet_id", "owner__username", "owner__email")
    list_select_related = ("owner",)
    ordering = ("-last_used_at",)
    readonly_fields = (
        "wallet",
        "owner_column",
        "currency",
        "amount_money",
        "granted_total_money",
        "charged_total_money",
        "released_total_money",
        "created_at",
        "last_used_at",
        "related",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "allowance")
    granted_total_money = money_column("granted_total", "granted in all")
    charged_total_money = money_column("charged_total", "charged in all")
    released_total_money = money_column("released_total", "released in all")

    @admin.display(description="related")
    def related(self, obj):
        label = self.opts.app_label
        return links_list(
            [
                (admin_url(f"{label}_charge_changelist", query={"wallet_id": obj.wallet_id}), "Charges"),
                (admin_url(f"{label}_release_changelist", query={"wallet_id": obj.wallet_id}), "Releases"),
                (
                    admin_url(
                        "billing_reservation_changelist",
                        query={"wallet__id__exact": obj.wallet_id, "context": label},
                    ),
                    "Billing's reservations for this context",
                ),
            ]
        )


class UsageAdmin(WalletColumnsMixin, ReadOnlyAdmin):
    """A metered context's usage records (iaas.spending's AbstractUsage): one per service
    and month, updated in place by the hourly run, closed into charges by settlement."""

    subject_model = ""  # the admin of the metered service ("server")
    list_display = (
        "subject",
        "month",
        "hours",
        "amount_money",
        "open_money",
        "wallet",
        "owner_column",
        "accrued_until",
        "close_due_at",
    )
    list_filter = ("currency", "month")
    search_fields = ("service_id", "wallet_id", "owner__username", "owner__email")
    list_select_related = ("owner",)
    ordering = ("-month", "service_id")
    readonly_fields = (
        "subject",
        "month",
        "wallet",
        "owner_column",
        "currency",
        "hours",
        "list_amount_money",
        "exact_list",
        "cap_money",
        "amount_money",
        "refunded_money",
        "closed_amount_money",
        "closed_hours",
        "closed_until",
        "accrued_until",
        "close_due_at",
        "updated_at",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "spent this month")
    list_amount_money = money_column("list_amount", "without the cap")
    cap_money = money_column("cap", "monthly cap")
    refunded_money = money_column("refunded", "refunded")
    closed_amount_money = money_column("closed_amount", "closed into charges")

    @admin.display(description="exact list")
    def exact_list(self, obj):
        """The list price as accrued, before the month's one rounding (ARCHITECTURE.md):
        in 1/LIST_DIVISOR minor units where an hour is a fraction of one."""
        divisor = type(obj).LIST_DIVISOR
        if divisor == 1:
            return f"{obj.list_exact} (whole minor units)"
        rounded = format_minor_units(obj.list_amount, obj.currency)
        return f"{obj.list_exact}/{divisor} minor units, rounded once: {rounded}"

    @admin.display(description="not yet closed")
    def open_money(self, obj):
        return format_minor_units(obj.open_amount, obj.currency)

    @admin.display(description="service", ordering="service_id")
    def subject(self, obj):
        return link(
            admin_url(f"{self.opts.app_label}_{self.subject_model}_change", obj.service_id),
            f"{self.subject_model} {obj.service_id}",
        )


class ChargeAdmin(WalletColumnsMixin, ReadOnlyAdmin):
    """A selling context's charges (iaas.spending's AbstractCharge). The settlement is
    Billing's ledger entry for the charge, found by its id."""

    # The model's admin of what a charge pays for ("server", "subscription").
    subject_model = ""
    list_display = (
        "description",
        "amount_money",
        "wallet",
        "owner_column",
        "subject",
        "transaction_date",
        "settlement",
    )
    list_filter = ("currency", "transaction_date")
    search_fields = ("id", "wallet_id", "subject_id", "owner__username", "owner__email", "description")
    list_select_related = ("owner",)
    date_hierarchy = "transaction_date"
    ordering = ("-transaction_date", "-created_at")
    readonly_fields = (
        "id",
        "description",
        "amount_money",
        "wallet",
        "owner_column",
        "subject",
        "period_start",
        "period_end",
        "transaction_date",
        "created_at",
        "settlement",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "amount")

    @admin.display(description="for")
    def subject(self, obj):
        return link(
            admin_url(f"{self.opts.app_label}_{self.subject_model}_change", obj.subject_id),
            f"{self.subject_model} {obj.subject_id}",
        )

    @admin.display(description="settlement")
    def settlement(self, obj):
        """Billing's record of the charge (its ledger entry, its invoice line, its refund),
        once Billing has booked it (ChargeSettled names the entry)."""
        if obj.ledger_entry_id is None:
            return "not settled yet"
        return link(admin_url("billing_settledcharge_change", obj.id), "settled charge")


class ReleaseAdmin(WalletColumnsMixin, ReadOnlyAdmin):
    """A selling context's releases (iaas.spending's AbstractRelease)."""

    list_display = ("created_at", "amount_money", "wallet", "reason")
    list_filter = ("currency", "reason", "created_at")
    search_fields = ("id", "wallet_id", "reason")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("id", "wallet", "amount_money", "currency", "reason", "created_at", "applied")
    fields = readonly_fields

    amount_money = money_column("amount", "amount")

    @admin.display(description="applied by Billing")
    def applied(self, obj):
        return link(
            admin_url("billing_reservation_changelist", query={"source_id": obj.id}),
            "reservation record",
        )
