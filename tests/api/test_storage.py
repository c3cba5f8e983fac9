"""Storage over HTTP (API.md, additions): the volume catalog, buying, listing, showing,
growing and deleting volumes, each customer seeing only their own."""

from __future__ import annotations

import pytest

from iaas.billing.models import Wallet
from iaas.storage.models import Usage, Volume, VolumePlan
from tests.api.conftest import assert_problem
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db

VOLUMES = "/api/v1/storage/volumes/"
VOLUME_FIELDS = {
    "id",
    "name",
    "plan",
    "wallet",
    "size_gb",
    "status",
    "created_at",
    "paid_until",
    "suspension_causes",
    "terminates_at",
    "usage_this_month",
}


def buy(client, paying_wallet, **overrides):
    body = {"name": "data-1", "plan": "ssd", "wallet": str(paying_wallet.id), "size_gb": 1000} | overrides
    return client.post(VOLUMES, body)


def test_the_plans_are_public_cheapest_first(anonymous, catalog):
    VolumePlan.objects.filter(pk="nvme").update(is_active=False)
    plans = anonymous.get("/api/v1/storage/plans/").json()["results"]
    assert plans == [
        {
            "id": "hdd",
            "name": "Standard HDD",
            "price_per_gb_month": 4,
            "min_size_gb": 10,
            "max_size_gb": 16000,
            "currency": "EUR",
        },
        {
            "id": "ssd",
            "name": "SSD",
            "price_per_gb_month": 10,
            "min_size_gb": 10,
            "max_size_gb": 16000,
            "currency": "EUR",
        },
    ]


def test_buy_a_volume(api, wallet, catalog, deliver):
    response = buy(api, wallet)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == VOLUME_FIELDS
    assert (body["name"], body["plan"], body["wallet"], body["size_gb"], body["status"]) == (
        "data-1",
        "ssd",
        str(wallet.id),
        1000,
        "active",
    )
    assert body["usage_this_month"] == {"hours": 1, "amount": 14}  # 1000 GB x 10 / 730, rounded
    assert (body["suspension_causes"], body["terminates_at"]) == ([], None)
    deliver()
    wallet_now = api.get(f"/api/v1/wallets/{wallet.id}/").json()
    assert (wallet_now["balance"], wallet_now["reserved"], wallet_now["available"]) == (10_000, 14, 9_986)


def test_a_wallet_that_cannot_pay_the_first_hour_is_402_and_nothing_is_created(api, customer, catalog):
    empty = funded_wallet(customer, amount=13)
    assert_problem(buy(api, empty), 402, "insufficient_funds")
    assert (Volume.objects.count(), Usage.objects.count()) == (0, 0)


def test_another_customers_wallet_is_404_and_changes_nothing(api, other_customer, catalog):
    theirs = funded_wallet(other_customer, amount=10_000)
    assert_problem(buy(api, theirs), 404, "not_found")
    assert not Volume.objects.exists()


def test_a_plan_in_another_currency_is_409(api, customer, catalog):
    dollars = funded_wallet(customer, amount=10_000, currency="USD")
    assert_problem(buy(api, dollars), 409, "currency_mismatch")


def test_a_frozen_wallet_is_409(api, wallet, catalog):
    Wallet.objects.filter(pk=wallet.pk).update(status=Wallet.Status.FROZEN)
    assert_problem(buy(api, wallet), 409, "wallet_not_active")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size_gb", 9),
        ("size_gb", 16_001),
        ("size_gb", "100"),
        ("size_gb", 100.0),
        ("size_gb", None),
        ("size_gb", True),
        ("plan", "tape"),
        ("plan", None),
        ("name", "-data"),
        ("name", "x" * 64),
        ("wallet", "nope"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_changes_nothing(api, wallet, catalog, field, value):
    body = assert_problem(buy(api, wallet, **{field: value}), 400, "validation_error")
    assert field in body["errors"]
    assert not Volume.objects.exists()


def test_a_size_outside_the_plan_says_the_plans_sizes(api, wallet, catalog):
    VolumePlan.objects.filter(pk="nvme").update(max_size_gb=4000)
    body = assert_problem(buy(api, wallet, plan="nvme", size_gb=5000), 400, "validation_error")
    assert body["errors"]["size_gb"] == ["Volumes of plan nvme are 10 to 4000 GB."]


def test_list_show_and_filter_only_your_own(api, other_api, wallet, catalog):
    mine = buy(api, wallet).json()
    listed = api.get(VOLUMES).json()
    assert [v["id"] for v in listed["results"]] == [mine["id"]]
    assert listed["results"][0]["usage_this_month"] == {"hours": 1, "amount": 14}
    assert api.get(f"{VOLUMES}{mine['id']}/").json()["size_gb"] == 1000
    assert api.get(VOLUMES, {"status": "deleted"}).json()["results"] == []
    assert_problem(api.get(VOLUMES, {"status": "gone"}), 400, "validation_error")
    assert other_api.get(VOLUMES).json()["results"] == []
    assert_problem(other_api.get(f"{VOLUMES}{mine['id']}/"), 404, "not_found")
    assert_problem(other_api.patch(f"{VOLUMES}{mine['id']}/", {"size_gb": 2000}), 404, "not_found")
    assert_problem(other_api.delete(f"{VOLUMES}{mine['id']}/"), 404, "not_found")
    assert Volume.objects.get().size_gb == 1000


def test_grow_a_volume(api, wallet, catalog):
    volume = buy(api, wallet).json()
    response = api.patch(f"{VOLUMES}{volume['id']}/", {"size_gb": 2000})
    assert response.status_code == 200
    body = response.json()
    assert (body["size_gb"], body["status"]) == (2000, "active")
    # The rest of the paid hour at 2000 GB: 20000/730 in all this month, rounded: 27.
    assert body["usage_this_month"] == {"hours": 1, "amount": 27}


@pytest.mark.parametrize(
    ("size_gb", "message"),
    [
        (999, "A volume can only grow: this one is 1000 GB."),
        (16_001, "Ensure this value is less than or equal to 16000."),
        (8_001, "Volumes of plan ssd are 10 to 8000 GB."),
    ],
)
def test_shrinking_or_outgrowing_the_plan_is_400(api, wallet, catalog, size_gb, message):
    volume = buy(api, wallet).json()
    VolumePlan.objects.filter(pk="ssd").update(max_size_gb=8000)  # the operator lowers the plan's limit
    body = assert_problem(
        api.patch(f"{VOLUMES}{volume['id']}/", {"size_gb": size_gb}), 400, "validation_error"
    )
    assert body["errors"]["size_gb"] == [message]
    assert Volume.objects.get().size_gb == 1000


def test_growing_without_the_money_is_402_and_changes_nothing(api, customer, catalog):
    wallet = funded_wallet(customer, amount=14)
    volume = buy(api, wallet).json()
    assert_problem(api.patch(f"{VOLUMES}{volume['id']}/", {"size_gb": 4000}), 402, "insufficient_funds")
    assert Volume.objects.get().size_gb == 1000


def test_delete_a_volume_and_it_cannot_grow_again(api, wallet, catalog):
    volume = buy(api, wallet).json()
    deleted = api.delete(f"{VOLUMES}{volume['id']}/")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "deleted"
    assert api.delete(f"{VOLUMES}{volume['id']}/").json()["status"] == "deleted"  # harmless twice
    assert_problem(api.patch(f"{VOLUMES}{volume['id']}/", {"size_gb": 2000}), 409, "invalid_state")


def test_an_idempotency_key_buys_one_volume(api, wallet, catalog):
    first = api.post(
        VOLUMES,
        {"name": "data-1", "plan": "ssd", "wallet": str(wallet.id), "size_gb": 100},
        HTTP_IDEMPOTENCY_KEY="vol-1",
    )
    again = api.post(
        VOLUMES,
        {"name": "data-1", "plan": "ssd", "wallet": str(wallet.id), "size_gb": 100},
        HTTP_IDEMPOTENCY_KEY="vol-1",
    )
    assert (first.status_code, again.status_code, again["Idempotent-Replayed"]) == (201, 201, "true")
    assert first.json() == again.json()
    assert Volume.objects.count() == 1
