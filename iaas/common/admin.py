"""Admin building blocks every context's admin shares: money shown as money, read-only
money tables, actions whose permissions are enforced on the server, and links between
admin pages by URL (contexts never import each other's admin). The base admins of the
selling contexts' tables (catalogs, what customers bought, allowance, usage, charges,
releases) are the selling kit's, in ``iaas.spending.admin``.

Every operator form and action that moves money or changes a service's state is
idempotent: the page renders a one-time token, and a second submission of it (a double
click, a browser retry, a replayed POST) is answered "already done" and does nothing.
Forms that book something with an id of its own (an adjustment, a refund) use the token
as that id; actions record each (token, row, action) they carried out, in the same
transaction as their effect, in a table the composition root registers
(``register_token_claim``).

Knows no context: models are named by ``app_label`` strings, pages by URL name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from iaas.common.db import retry_transaction
from iaas.contracts.errors import DomainError
from iaas.contracts.types import format_minor_units

# --- Money ---------------------------------------------------------------------------------


def money(amount: int | None, currency: str) -> str:
    """``1250, "EUR"`` -> ``12.50 EUR`` in a span the admin's stylesheet right-aligns."""
    if amount is None:
        return "-"
    return format_html('<span class="money">{}</span>', format_minor_units(amount, currency))


def money_column(
    field: str, description: str, *, currency: str = "currency", ordering: str | None = None
) -> Callable:
    """A list or detail column showing the integer ``field`` as money. ``currency`` is an
    attribute path on the row (``"wallet.currency"``)."""

    @admin.display(description=description, ordering=ordering or field)
    def column(self, obj):
        return money(getattr(obj, field), attribute(obj, currency))

    column.__name__ = f"{field}_money"
    return column


def attribute(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


# --- Links by URL ----------------------------------------------------------------------------


def admin_url(view: str, *args, query: dict | None = None) -> str | None:
    """The URL of an admin page (``"billing_wallet_change"``), or None when that model is
    not in the admin. Pages of another context are reached this way, never by import."""
    try:
        url = reverse(f"admin:{view}", args=args)
    except NoReverseMatch:
        return None
    if query:
        url += "?" + urlencode(query)
    return url


def link(url: str | None, text) -> str:
    if not url:
        return format_html("{}", text)
    return format_html('<a href="{}">{}</a>', url, text)


def wallet_link(wallet_id, text=None) -> str:
    """Billing's page of a wallet, for any context that knows only the wallet id."""
    if wallet_id is None:
        return "-"
    return link(admin_url("billing_wallet_change", wallet_id), text or wallet_id)


def user_link(user) -> str:
    if user is None:
        return "-"
    return link(
        admin_url("auth_user_change", user.pk),
        format_html("{} &lt;{}&gt;", user.get_username(), user.email) if user.email else user.get_username(),
    )


def links_list(items: Iterable[tuple[str | None, str]]) -> str:
    """An unordered list of links; entries whose page does not exist show as text."""
    return format_html(
        '<ul class="iaas-links">{}</ul>',
        format_html_join("", "<li>{}</li>", ((link(url, text),) for url, text in items)),
    )


def table(headers: Iterable[str], rows: Iterable[Iterable], *, empty: str = "None yet.") -> str:
    """A small read-only table for a detail page (recent ledger entries, holds)."""
    rows = list(rows)
    if not rows:
        return format_html("<p>{}</p>", empty)
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html(
        '<table class="iaas-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body
    )


# --- One-time tokens: every operator submission happens once ------------------------------------

# The name of the hidden field that carries a form's one-time token.
OPERATION_TOKEN = "operation_token"  # noqa: S105 (a field name, not a secret)
STALE_FORM = "This form carries no valid one-time token: reload the page and submit it again."


def operation_token_field() -> forms.UUIDField:
    """A form's one-time token: a new random UUID each time the page is rendered, kept by
    a re-rendered (invalid) form, so every submission of one rendering is one operation."""
    return forms.UUIDField(
        widget=forms.HiddenInput,
        initial=uuid.uuid4,
        label="",
        error_messages={"required": STALE_FORM, "invalid": STALE_FORM},
    )


class OperationTokenActionForm(helpers.ActionForm):
    """The changelist's action form, with the one-time token. Not required here (Django
    would answer a missing one with "No action selected"): ``run_service`` refuses a
    submission without a token and says why."""

    operation_token = operation_token_field()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields[OPERATION_TOKEN].required = False


def operation_token(request: HttpRequest) -> uuid.UUID | None:
    """The one-time token a POST carries, or None when it has none (or not a UUID)."""
    try:
        return uuid.UUID(request.POST.get(OPERATION_TOKEN, ""))
    except ValueError:
        return None


class AlreadyDone(Exception):
    """This token was used for this row and action already: nothing was done again."""


# claim(token, target, user_id) -> bool: record that ``token`` was used for ``target``
# in the caller's transaction; False when it was already. The used tokens' table lives
# in the composition root (iaas.operations), which registers it at start-up: this
# module imports no app.
_token_claim: Callable[[uuid.UUID, str, int | None], bool] | None = None


def register_token_claim(claim: Callable[[uuid.UUID, str, int | None], bool]) -> None:
    global _token_claim
    _token_claim = claim


def claim_operation_token(token: uuid.UUID, target: str, *, user_id: int | None = None) -> None:
    """Use ``token`` for ``target`` (``"cloud.server:<pk>:suspend_servers"``) inside the
    transaction that does the work, so it counts as used exactly when the work commits:
    a submission racing the first waits for it, then finds the token used. Raises
    AlreadyDone when it was used before."""
    if _token_claim is None:
        raise ImproperlyConfigured("No table of used operation tokens is registered (register_token_claim).")
    if not _token_claim(token, target, user_id):
        raise AlreadyDone(target)


# --- Read-only tables and guarded actions -------------------------------------------------------


class OperatorAdmin(admin.ModelAdmin):
    """Admin actions whose permissions are checked on the server: posting an action the
    user is not allowed (a hidden button is no protection) is a 403, not a silent
    "no action selected". Change pages can offer the actions as buttons
    (``object_actions``), and actions answer through ``run_service`` so that a domain
    refusal becomes a message rather than a 500, and a second submission of one page's
    form (its one-time token) does nothing more."""

    change_form_template = "admin/iaas/change_form.html"
    action_form = OperationTokenActionForm
    # (action name, button label) offered on an object's change page.
    object_actions: tuple[tuple[str, str], ...] = ()

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            allowed = self.get_actions(request)
            for name in request.POST.getlist("action"):
                if name and name not in allowed and self.get_action(name) is not None:
                    raise PermissionDenied
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), **self.object_tools_context(request, object_id)}
        return super().change_view(request, object_id, form_url, extra_context)

    def object_tools_context(self, request, object_id) -> dict:
        allowed = self.get_actions(request)
        return {
            "object_actions": [(name, label) for name, label in self.object_actions if name in allowed],
            "object_links": self.object_links(request, object_id),
            "changelist_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
                current_app=self.admin_site.name,
            ),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            # One token for the page's buttons: each is claimed per row and action.
            "operation_token_name": OPERATION_TOKEN,
            "operation_token": uuid.uuid4(),
        }

    def object_links(self, request, object_id) -> list[tuple[str, str]]:
        """(url, label) buttons on the change page, e.g. a form of its own."""
        return []

    # --- running a service per selected row ----------------------------------------------

    def run_service(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        service: Callable,
        *,
        done: str,
    ):
        """Call ``service(obj)`` for each selected row, each in its own transaction (the
        services open their own), and report what happened. Refusals (an already
        suspended server) are listed, not raised.

        Once per submission: the form's one-time token is claimed for each row and
        action in the row's transaction, so a second submission (a double click, a
        browser retry) finds it used and reports "already done" for that row, changing
        nothing. A submission without a token is refused whole."""
        if self.submission_token(request) is None:
            return self.back(request)
        succeeded, already, refused = [], [], []
        for obj in queryset:

            def once(obj=obj):
                self.claim_submission(request, obj.pk)
                return service(obj)

            try:
                # Its own transaction, retried on a deadlock or lock timeout, then refused.
                retry_transaction(once)()
            except AlreadyDone:
                already.append(str(obj))
            except DomainError as error:
                refused.append(f"{obj}: {error.detail}")
            else:
                succeeded.append(str(obj))
                self.log_change(request, obj, f"{done} (by {request.user.get_username()})")
        if succeeded:
            self.message_user(request, f"{done}: {', '.join(succeeded)}.", messages.SUCCESS)
        if already:
            self.message_user(
                request,
                f"Already done by this form's first submission, nothing done again: {', '.join(already)}.",
                messages.WARNING,
            )
        for refusal in refused:
            self.message_user(request, refusal, messages.ERROR)
        return self.back(request)

    def submission_token(self, request: HttpRequest) -> uuid.UUID | None:
        """The one-time token of this submission; None (and the operator told to reload
        the page) when it carries none: such a submission is refused whole."""
        token = operation_token(request)
        if token is None:
            self.message_user(request, STALE_FORM, messages.ERROR)
        return token

    def claim_submission(self, request: HttpRequest, pk) -> None:
        """Use this submission's token for row ``pk`` and the posted action, in the
        transaction that does the work; AlreadyDone when it was used for them before.
        For actions that do not go through ``run_service``."""
        claim_operation_token(
            operation_token(request),
            f"{self.opts.label_lower}:{pk}:{self.posted_action(request)}",
            user_id=request.user.pk,
        )

    def first_submission(self, request: HttpRequest, pk) -> bool:
        """``claim_submission`` as a question: True the first time this submission's token
        is used for row ``pk``, False when it was before (nothing to do again)."""
        try:
            self.claim_submission(request, pk)
        except AlreadyDone:
            return False
        return True

    @staticmethod
    def posted_action(request: HttpRequest) -> str:
        """The action's name: from the action menu (one select per menu, the button's
        ``index`` says which) or from a button or confirmation page (one field)."""
        names = request.POST.getlist("action")
        if len(names) > 1:
            return names[int(request.POST.get("index", 0))]
        return names[0] if names else ""

    def back(self, request: HttpRequest):
        """After an action started from an object's page, return to that page."""
        target = request.POST.get("_next", "")
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return HttpResponseRedirect(target)
        return None

    def confirm(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        *,
        title: str,
        warning: str,
        reason_label: str | None = None,
    ):
        """An intermediate page for an action that cannot be undone (Django's
        delete-confirmation pattern). Returns None once the operator confirmed.

        With ``reason_label`` the page asks for a reason (required, at most 255
        characters) and shows the page again with the error until one is given; the
        action then reads it with ``confirmed_reason``. The page carries the form's
        one-time token forward, so confirming twice does the work once."""
        confirmed = request.POST.get("confirmed") == "yes"
        form = None
        if reason_label is not None:
            form = ConfirmReasonForm(request.POST if confirmed else None, label=reason_label)
        if confirmed and (form is None or form.is_valid()):
            if form is not None:
                setattr(request, CONFIRMED_REASON, form.cleaned_data["reason"])
            return None
        return TemplateResponse(
            request,
            "admin/iaas/confirm_action.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "warning": warning,
                "objects": list(queryset),
                "opts": self.opts,
                "action": self.posted_action(request),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "next": request.POST.get("_next", ""),
                "reason_form": form,
                "operation_token_name": OPERATION_TOKEN,
                # The token of the page the action came from; a page without one gets
                # a token here (each confirmation page is then one operation).
                "operation_token": operation_token(request) or uuid.uuid4(),
            },
        )

    @staticmethod
    def confirmed_reason(request: HttpRequest) -> str:
        """The reason the operator gave on the confirmation page (``confirm`` with a
        ``reason_label``); empty when none was asked for."""
        return getattr(request, CONFIRMED_REASON, "")


# Where ``confirm`` leaves the reason it validated for the action to read.
CONFIRMED_REASON = "_iaas_confirmed_reason"


class ConfirmReasonForm(forms.Form):
    reason = forms.CharField(max_length=255, widget=forms.TextInput(attrs={"size": 60, "autofocus": True}))

    def __init__(self, *args, label: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].label = label
        self.fields["reason"].error_messages["required"] = "Give a reason: it is recorded with the action."


class ReadOnlyAdmin(OperatorAdmin):
    """Rows operators may look at but nobody edits, adds or deletes in the admin: money
    and states move only through the contexts' services (operator actions). The view
    permission is kept."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- Money typed by an operator ---------------------------------------------------------------


def parse_major_units(text: str, *, exponent: int = 2) -> int:
    """``"12.50"`` -> ``1250``: an amount typed in major units, read with integer
    arithmetic only (no float, no Decimal). Raises ValueError with a message an operator
    understands."""
    text = (text or "").strip().replace("\u00a0", "").replace(" ", "")
    whole, dot, fraction = text.partition(".")
    if not whole.isdigit() or not whole.isascii() or (dot and not fraction):
        raise ValueError(
            f"Enter a positive amount such as 12.50 (digits, and a dot before the {exponent} decimals)."
        )
    if fraction and (not fraction.isdigit() or not fraction.isascii() or len(fraction) > exponent):
        raise ValueError(f"At most {exponent} decimals.")
    if len(whole) > 12:
        raise ValueError("That amount is too large.")
    return int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or 0)
