"""The operator console's second factor: superusers and Finance cannot reach any admin
page (money pages above all) on a password alone; they are sent to the code step, or to
set-up when they have enrolled nothing. Support may enter without one, and may enrol.
A wrong code is refused; a recovery code works once."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from iaas.billing.models import LedgerEntry
from iaas.operations import second_factor
from tests.admin.conftest import PASSWORD, enrol_authenticator, make_operator
from tests.factories import funded_wallet

OTP_STEP = "/admin/otp/"
SET_UP = "/admin/otp/setup/"


def current_code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, digits=device.digits):0{device.digits}d}"


def password_login(client, user, **extra):
    response = client.post(
        reverse("admin:login"), {"username": user.username, "password": PASSWORD, "next": "/admin/"}, **extra
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return response


def redirect_path(response) -> str:
    assert response.status_code == 302
    return urlsplit(response["Location"]).path


@pytest.fixture
def wallet(alice):
    return funded_wallet(alice, amount=10_000)


def money_pages(wallet):
    return [
        reverse("admin:index"),
        reverse("admin:billing_wallet_changelist"),
        reverse("admin:billing_wallet_change", args=[wallet.pk]),
        reverse("admin:billing_wallet_adjust", args=[wallet.pk]),
        reverse("admin:overview"),
    ]


@pytest.mark.parametrize("role", ["superuser", "finance"])
def test_a_password_alone_does_not_reach_the_console(client, superuser, finance, wallet, role):
    user = {"superuser": superuser, "finance": finance}[role]
    password_login(client, user)
    for page in money_pages(wallet):
        response = client.get(page)
        assert redirect_path(response) == OTP_STEP, page
        assert parse_qs(urlsplit(response["Location"]).query)["next"] == [page]


def test_an_unverified_finance_operator_cannot_adjust_a_balance(client, finance, wallet):
    password_login(client, finance)
    before = LedgerEntry.objects.count()
    response = client.post(
        reverse("admin:billing_wallet_adjust", args=[wallet.pk]),
        {"direction": "credit", "amount": "10.00", "reason": "not without a second factor"},
    )
    assert redirect_path(response) == OTP_STEP
    assert LedgerEntry.objects.count() == before


def test_finance_without_a_device_is_sent_to_set_up(client, operator_groups, wallet):
    newcomer = make_operator("nina", group="Finance")
    password_login(client, newcomer)
    for page in money_pages(wallet):
        assert redirect_path(client.get(page)) == SET_UP, page
    assert redirect_path(client.get(OTP_STEP)) == SET_UP


def test_the_code_step_lets_finance_in_and_the_login_page_leads_there(client, finance, wallet):
    response = password_login(client, finance)
    assert redirect_path(client.get(response["Location"])) == OTP_STEP
    assert redirect_path(client.get(reverse("admin:login"))) == OTP_STEP
    page = client.get(OTP_STEP)
    assert page.status_code == 200
    assert b"authenticator app" in page.content

    device = TOTPDevice.objects.get(user=finance)
    adjust = reverse("admin:billing_wallet_adjust", args=[wallet.pk])
    response = client.post(OTP_STEP, {"code": current_code(device), "next": adjust})
    assert response["Location"] == adjust
    assert client.get(adjust).status_code == 200


def test_a_wrong_code_is_refused(client, finance):
    password_login(client, finance)
    device = TOTPDevice.objects.get(user=finance)
    wrong = f"{(int(current_code(device)) + 1) % 1_000_000:06d}"
    with time_machine.travel(timezone.now(), tick=False):  # within the one-second wait
        response = client.post(OTP_STEP, {"code": wrong})
        assert response.status_code == 200
        assert b"That code is not valid" in response.content
        assert redirect_path(client.get("/admin/")) == OTP_STEP
        device.refresh_from_db()
        assert device.throttling_failure_count == 1  # the next tries wait longer
        # Within the wait, even the right code is refused, and the page says how long.
        throttled = client.post(OTP_STEP, {"code": current_code(device)})
        assert b"Too many wrong codes: wait 1 seconds" in throttled.content
        assert redirect_path(client.get("/admin/")) == OTP_STEP


def test_a_code_is_not_accepted_twice(client, finance):
    password_login(client, finance)
    device = TOTPDevice.objects.get(user=finance)
    code = current_code(device)
    client.post(OTP_STEP, {"code": code})
    assert client.get("/admin/").status_code == 200
    client.logout()
    password_login(client, finance)
    assert client.post(OTP_STEP, {"code": code}).status_code == 200  # refused: replayed
    assert redirect_path(client.get("/admin/")) == OTP_STEP


def test_a_recovery_code_works_once(client, finance):
    codes = second_factor.recovery_codes_issue(user=finance)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    password_login(client, finance)
    response = client.post(OTP_STEP, {"code": codes[0].upper()})
    assert redirect_path(response) == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert StaticToken.objects.filter(device__user=finance).count() == 9
    assert TOTPDevice.objects.get(user=finance).throttling_failure_count == 0  # not tried on the app

    client.logout()
    password_login(client, finance)
    again = client.post(OTP_STEP, {"code": codes[0]})
    assert again.status_code == 200
    assert b"That code is not valid" in again.content
    assert redirect_path(client.get("/admin/")) == OTP_STEP


def test_support_enters_without_a_second_factor(client, support, wallet):
    password_login(client, support)
    assert client.get(reverse("admin:billing_wallet_change", args=[wallet.pk])).status_code == 200
    assert client.get("/admin/").status_code == 200


def test_support_who_enrolled_is_asked_for_the_code(client, support):
    enrol_authenticator(support)
    password_login(client, support)
    assert redirect_path(client.get("/admin/")) == OTP_STEP


def test_logging_out_works_before_the_second_factor(client, finance):
    password_login(client, finance)
    response = client.post(reverse("admin:logout"))
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_the_second_factor_pages_need_a_password_login(client, finance):
    for page in (OTP_STEP, SET_UP, "/admin/otp/recovery-codes/"):
        assert redirect_path(client.get(page)) == reverse("admin:login")


def test_set_up_enrols_an_authenticator_and_shows_the_recovery_codes_once(client, operator_groups):
    newcomer = make_operator("nina", group="Finance")
    password_login(client, newcomer)
    page = client.get(SET_UP + "?next=/admin/billing/wallet/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html  # the QR code
    uri = re.search(r'id="otp-uri">([^<]+)<', html).group(1).replace("&amp;", "&")
    assert uri.startswith("otpauth://totp/IaaS%20billing%3Anina?secret=")
    secret = re.search(r'id="otp-secret">([^<]+)<', html).group(1).replace(" ", "")
    device = TOTPDevice.objects.get(user=newcomer, confirmed=False)
    assert parse_qs(urlsplit(uri).query)["secret"] == [secret]
    assert client.get(SET_UP).content.decode().count(secret[:8]) >= 1  # reload: same secret

    refused = client.post(SET_UP, {"code": "000000" if current_code(device) != "000000" else "111111"})
    assert b"That code does not match" in refused.content
    assert not TOTPDevice.objects.filter(user=newcomer, confirmed=True).exists()

    # The next period's code: the failure above throttles the device for a second.
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=35), tick=False):
        done = client.post(SET_UP, {"code": current_code(device), "next": "/admin/billing/wallet/"})
        assert redirect_path(done) == "/admin/otp/recovery-codes/"
        shown = client.get(done["Location"])
    assert shown.status_code == 200
    stored = set(StaticToken.objects.filter(device__user=newcomer).values_list("token", flat=True))
    assert len(stored) == 10
    assert all(code in shown.content.decode() for code in stored)
    assert redirect_path(client.get("/admin/otp/recovery-codes/")) == SET_UP  # never twice
    assert client.get("/admin/billing/wallet/").status_code == 200  # verified by the set-up
    assert TOTPDevice.objects.get(user=newcomer).confirmed


def test_set_up_cannot_replace_an_authenticator_before_the_code_step(client, finance):
    password_login(client, finance)
    assert redirect_path(client.get(SET_UP)) == OTP_STEP
    assert redirect_path(client.post(SET_UP, {"code": "123456"})) == OTP_STEP
    before = set(StaticToken.objects.values_list("token", flat=True))
    assert redirect_path(client.post("/admin/otp/recovery-codes/")) == SET_UP
    assert set(StaticToken.objects.values_list("token", flat=True)) == before


def test_recovery_codes_alone_still_guard_set_up(client, finance):
    # A superuser deleted the lost authenticator, but the operator kept recovery codes:
    # the password alone must not enrol a new authenticator.
    codes = second_factor.recovery_codes_issue(user=finance)
    TOTPDevice.objects.filter(user=finance).delete()
    password_login(client, finance)
    assert redirect_path(client.get("/admin/")) == OTP_STEP
    assert redirect_path(client.get(SET_UP)) == OTP_STEP
    assert redirect_path(client.post(OTP_STEP, {"code": codes[0]})) == "/admin/"
    assert client.get(SET_UP).status_code == 200  # now set up a new app
    assert TOTPDevice.objects.filter(user=finance, confirmed=False).exists()


def test_a_verified_operator_can_get_new_recovery_codes(as_role, finance):
    client = as_role("finance")
    old = second_factor.recovery_codes_issue(user=finance)
    status = client.get(SET_UP)
    assert b"Unused recovery codes: <strong>10</strong>" in status.content
    response = client.post("/admin/otp/recovery-codes/")
    shown = client.get(response["Location"]).content.decode()
    new = set(StaticToken.objects.filter(device__user=finance).values_list("token", flat=True))
    assert len(new) == 10
    assert not new & set(old)
    assert all(code in shown for code in new)
    assert StaticDevice.objects.filter(user=finance).count() == 1


def test_who_must_have_a_second_factor(superuser, finance, support):
    assert second_factor.second_factor_required(superuser)
    assert second_factor.second_factor_required(finance)
    assert not second_factor.second_factor_required(support)


def test_what_a_verified_operator_request_costs(as_role, wallet):
    """The second factor and the idle timeout cost an admin request two statements: the
    session's device (OTPMiddleware) and the session's renewal. No policy queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = as_role("finance")
    client.get("/admin/")
    with CaptureQueriesContext(connection) as captured:
        assert client.get(reverse("admin:billing_wallet_change", args=[wallet.pk])).status_code == 200
    statements = [query["sql"] for query in captured.captured_queries]
    assert sum('"otp_' in sql for sql in statements) == 1
    assert sum(sql.startswith('UPDATE "django_session"') for sql in statements) == 1
    assert not any('"axes_' in sql for sql in statements)
