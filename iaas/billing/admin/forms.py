"""The operator's money forms, an adjustment and a refund, and the page that shows one and
books what it asks through Billing's services.

Each form carries a one-time token that becomes the adjustment's or refund's id:
submitting the same page twice books once and then says "already booked"."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from iaas.common.admin import operation_token_field, parse_major_units
from iaas.common.db import retry_transaction, run_after_rollback
from iaas.contracts.errors import DomainError
from iaas.contracts.types import minor_unit_exponent

from .. import services


def money_form_page(
    model_admin, request, obj, form, *, crumb, title, summary, explanation, submit_label, form_id
):
    """The page of an operator's money form (an adjustment, a refund): the figures it
    acts on, what it will do, the form."""
    return TemplateResponse(
        request,
        "admin/billing/money_form.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "opts": model_admin.opts,
            "original": obj,
            "form": form,
            "crumb": crumb,
            "summary": summary,
            "explanation": explanation,
            "submit_label": submit_label,
            "form_id": form_id,
        },
    )


def operator_object(model_admin, request, object_id, *, has_permission, missing: str):
    """The object an operator's money page acts on, or 404 / 403 (enforced on the server)."""
    obj = model_admin.get_object(request, unquote(object_id))
    if obj is None:
        raise Http404(missing)
    if not (model_admin.has_view_permission(request, obj) and has_permission(request)):
        raise PermissionDenied
    return obj


def book_from_form(model_admin, request, form, obj, *, book, describe, wallet_id):
    """Book what a valid money form asks through Billing's service (retried on lock
    contention), with the form's one-time token as the booking's id. A refusal becomes
    the form's error and changes nothing; the work it asks for after the rollback (a
    release request) is done. A second submission of the same form books nothing and
    says so. Success is logged with the operator and the reason, told, and redirects to
    the wallet."""
    if request.method != "POST" or not form.is_valid():
        return None
    wallet_page = HttpResponseRedirect(reverse("admin:billing_wallet_change", args=[wallet_id]))
    try:
        booked = retry_transaction(book)()
    except services.AlreadyBooked as repeat:
        model_admin.message_user(
            request,
            f"Already booked by this form's first submission ({describe(repeat.booked).rstrip('.')}); "
            "nothing was booked again.",
            messages.WARNING,
        )
        return wallet_page
    except DomainError as refusal:
        # The outermost owner of the refused transaction: run what the refusal asked
        # for once it rolled back (retry_transaction did, unless a caller's transaction
        # was open around it).
        run_after_rollback(refusal)
        form.add_error(None, refusal.detail)
        return None
    done = describe(booked)
    model_admin.log_change(
        request, obj, f"{type(booked).__name__} {booked.pk}: {done} Reason: {booked.reason}"
    )
    model_admin.message_user(request, done, messages.SUCCESS)
    return wallet_page


def example_amount(currency: str) -> str:
    """An amount as an operator types it in ``currency``: 12.50 EUR, 12 JPY, 12.500 KWD."""
    exponent = minor_unit_exponent(currency)
    return "12" + ("." + "5".ljust(exponent, "0") if exponent else "")


def parse_amount(text: str, currency: str) -> int:
    """An amount typed in major units of ``currency``, in its minor units (its own number of
    decimals: none for JPY, three for KWD); a form error when it is not one."""
    try:
        return parse_major_units(text, exponent=minor_unit_exponent(currency))
    except ValueError as error:
        raise forms.ValidationError(str(error)) from None


def reason_field(help_text: str) -> forms.CharField:
    return forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=1000, help_text=help_text
    )


def clean_reason_text(text: str) -> str:
    reason = text.strip()
    if not reason:
        raise forms.ValidationError("Say why: the reason is kept with the ledger entry.")
    return reason


class AdjustmentForm(forms.Form):
    direction = forms.ChoiceField(
        choices=[
            ("credit", "Credit: add to the balance"),
            ("debit", "Debit: take from the available balance"),
        ],
        widget=forms.RadioSelect,
    )
    amount = forms.CharField(max_length=20, help_text="In major units")
    reason = reason_field("Required. Shown on the ledger entry; the customer may see it.")
    # The adjustment's id: a second submission of this page books nothing.
    operation_token = operation_token_field()

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["amount"].help_text = f"In {currency}, e.g. {example_amount(currency)}"

    def clean_amount(self) -> int:
        amount = parse_amount(self.cleaned_data["amount"], self.currency)
        if amount == 0:
            raise forms.ValidationError("An adjustment is never zero.")
        if amount > settings.IAAS_MAX_TOP_UP:
            raise forms.ValidationError(
                f"At most {settings.IAAS_MAX_TOP_UP:,} minor units in one adjustment (IAAS_MAX_TOP_UP)."
            )
        return amount

    def clean_reason(self) -> str:
        return clean_reason_text(self.cleaned_data["reason"])

    def signed_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        return -amount if self.cleaned_data["direction"] == "debit" else amount


class RefundForm(forms.Form):
    amount = forms.CharField(
        max_length=20, required=False, help_text="Leave empty to refund the whole charge."
    )
    reason = reason_field("Required. Shown on the refund's ledger entry; the customer may see it.")
    # The refund's id: a second submission of this page books nothing.
    operation_token = operation_token_field()

    def __init__(self, *args, currency: str, charged: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["amount"].help_text = f"In {currency}, at most {charged}. Leave empty to refund it all."

    def clean_amount(self) -> int | None:
        text = self.cleaned_data["amount"]
        if not text.strip():
            return None
        amount = parse_amount(text, self.currency)
        if amount == 0:
            raise forms.ValidationError("A refund is never zero.")
        return amount

    def clean_reason(self) -> str:
        return clean_reason_text(self.cleaned_data["reason"])
