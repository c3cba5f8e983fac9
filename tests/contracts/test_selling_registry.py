"""The selling registry holds each context's spender itself (no adapter in between), and
the spender answers every member of ``iaas.contracts.selling.SellingContext``."""

from __future__ import annotations

import inspect

from iaas.cloud.spending import spender as cloud_spender
from iaas.contracts import selling
from iaas.contracts.selling import SellingContext, WalletPage
from iaas.hosting.spending import spender as hosting_spender


def protocol_members() -> set[str]:
    methods = {
        name
        for name, member in vars(SellingContext).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }
    return methods | set(SellingContext.__annotations__)


def test_the_registered_context_is_the_spender():
    assert selling.context("cloud") is cloud_spender
    assert selling.context("hosting") is hosting_spender


def test_each_registered_spender_answers_the_whole_protocol():
    members = protocol_members()
    assert {"name", "reserve_ahead", "close_usage", "set_allowance_blocked"} <= members
    for context in selling.contexts():
        missing = {name for name in members if not hasattr(context, name)}
        assert missing == set(), context.name


def test_what_the_registry_shows_comes_from_the_apps_config():
    assert (cloud_spender.name, cloud_spender.label, cloud_spender.app_label) == ("cloud", "Cloud", "cloud")
    assert cloud_spender.reserve_ahead == 0
    assert cloud_spender.service_model.__name__ == "Server"
    assert hosting_spender.service_model is None
    servers = WalletPage(url_name="cloud_server_changelist", title="Cloud servers")
    assert cloud_spender.wallet_pages[0] == servers


def test_the_reserve_ahead_setting_overrides_the_registered_default(settings, monkeypatch):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 5000}
    assert cloud_spender.reserve_ahead_chunk() == 5000
    settings.IAAS_RESERVE_AHEAD = {}
    monkeypatch.setattr(type(cloud_spender.config), "reserve_ahead", 700)
    assert cloud_spender.reserve_ahead_chunk() == 700
