"""The first README command's demo data gives an operator something to look at, and
logins that work with the second factor on."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from iaas.cloud.models import Server
from iaas.hosting.models import Subscription


def test_seed_demo_makes_operators_and_a_customer_with_services_once(catalog, operator_groups):
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115

    users = get_user_model().objects
    finance, support = users.get(username="finance"), users.get(username="support")
    assert finance.is_staff
    assert finance.has_perm("billing.make_adjustment")
    assert finance.has_perm("contracts.retry_outboxmessage")
    assert support.is_staff
    assert support.has_perm("billing.view_wallet")
    assert not support.has_perm("billing.make_adjustment")
    assert not support.has_perm("cloud.change_server")
    assert users.get(username="operator").is_superuser
    assert Server.objects.filter(owner__username="demo").count() == 1
    assert Subscription.objects.filter(owner__username="demo").count() == 1


def test_seed_demo_prints_a_second_factor_that_logs_the_demo_finance_operator_in(
    catalog, operator_groups, client
):
    import io
    import re

    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    printed = out.getvalue()
    secret = re.search(r"finance\s+secret (\w+)", printed).group(1)
    codes = re.search(r"finance\s+secret \w+\n\s+recovery codes ([\w ]+)", printed).group(1).split()
    assert len(codes) == 10
    device = TOTPDevice.objects.get(user__username="finance", confirmed=True)
    assert base64.b32decode(secret) == device.bin_key
    assert "support / support-demo-2026  (no second factor)" in printed

    client.post("/admin/login/", {"username": "finance", "password": "finance-demo-2026"})
    assert client.get("/admin/")["Location"].startswith("/admin/otp/")
    code = f"{totp(base64.b32decode(secret)):06d}"
    assert client.post("/admin/otp/", {"code": code})["Location"] == "/admin/"
    assert client.get("/admin/billing/wallet/").status_code == 200

    again = io.StringIO()
    call_command("seed_demo", stdout=again)  # the same secret; the unused codes again
    assert f"secret {secret}" in again.getvalue()


def test_seed_demo_is_refused_under_production_settings(settings):
    settings.IAAS_DEMO_DATA_ALLOWED = False
    with pytest.raises(CommandError, match="not under production settings"):
        call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
