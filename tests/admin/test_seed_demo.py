"""The first README command's demo data gives an operator something to look at."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management import call_command

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
