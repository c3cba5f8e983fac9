"""The catalogs in the operator console: a plan's currency is fixed once the plan exists
(servers and subscriptions of the plan are billed in it: changing it would leave them
unbillable), and the price fields say that a change applies from the next charge."""

from __future__ import annotations

import pytest
from django.urls import reverse

from iaas.cloud.models import ServerPlan
from iaas.hosting.models import HostingPlan

PLANS = [
    (ServerPlan, "s-1vcpu-1gb", "price_per_hour"),
    (HostingPlan, "web-starter", "price_per_month"),
]


def change_url(model, pk) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])


def form_data(plan, fields) -> dict:
    data = {name: getattr(plan, name) for name in fields}
    data["is_active"] = "on" if plan.is_active else ""
    return data


@pytest.mark.parametrize(("model", "pk", "price"), PLANS, ids=["cloud", "hosting"])
def test_an_existing_plan_shows_its_currency_read_only(as_role, books, model, pk, price):
    page = as_role("superuser").get(change_url(model, pk)).content.decode()
    assert 'name="currency"' not in page
    assert 'class="readonly">EUR<' in page
    assert "A change applies from the next charge" in page


@pytest.mark.parametrize(("model", "pk", "price"), PLANS, ids=["cloud", "hosting"])
def test_a_post_that_changes_the_currency_changes_nothing_of_it(as_role, books, model, pk, price):
    plan = model.objects.get(pk=pk)
    editable = [f.name for f in model._meta.fields if f.name not in ("id", "currency")]
    data = {**form_data(plan, editable), "currency": "USD", price: getattr(plan, price) + 1}

    response = as_role("superuser").post(change_url(model, pk), data)

    assert response.status_code == 302, response.content.decode()[:2000]
    plan.refresh_from_db()
    assert plan.currency == "EUR"
    assert getattr(plan, price) == data[price]


@pytest.mark.parametrize(("model", "pk", "price"), PLANS, ids=["cloud", "hosting"])
def test_a_new_plan_chooses_its_currency(as_role, books, settings, model, pk, price):
    add = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
    page = as_role("superuser").get(add).content.decode()
    assert '<select name="currency"' in page
    for currency in settings.IAAS_SUPPORTED_CURRENCIES:
        assert f'<option value="{currency}"' in page
    assert "A change applies from the next charge" in page
