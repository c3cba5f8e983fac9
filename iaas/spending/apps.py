"""The start-up half of the selling-context kit: a context's ``AppConfig`` subclasses
``SellingContextConfig``, declares what differs (its service model, its admin pages, its
default reserve-ahead chunk), and ``ready()`` plugs it in: its spender's handlers on the
bus, and the spender itself in ``iaas.contracts.selling``'s registry (the spender is the
context's implementation of that contract). Nothing outside the context names it after
that.

Not an installed app: ``iaas.spending`` holds no tables of its own (its models are
abstract), so Django never picks this config as a default."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from django.apps import AppConfig, apps
from django.utils.module_loading import import_string


class SellingContextConfig(AppConfig):
    """The AppConfig of a selling context built from the kit.

    A subclass sets Django's ``name``, ``label`` and ``verbose_name`` (the label people
    read, "Cloud"), and:

    - ``spender``: the dotted path of its ``Spender`` (default: ``<app>.spending.spender``);
      the spender's ``context`` is the name Billing knows it under, and the first part
      of its subscriptions' names (``cloud.record_settlement``: outbox rows store them,
      so they never change);
    - ``metered``: the dotted path, in the app, of its ``MeteredServices``
      ("spending.servers") when it sells services metered by the hour: the metering run
      (``bill_usage``) meters them, and reconciliation holds each service's usage records
      against it (I11);
    - ``sold``: the dotted path, in the app, of its ``SoldServices`` (iaas.spending.sold:
      what its lifecycle events tell, its grace period), default its ``metered``: the
      warning before a service ends (``warn_service_ends``) looks at them;
    - ``service_pages``: its services' admin pages about one wallet, as (model name,
      plural noun) pairs; the kit's charge and allowance pages follow them;
    - ``reserve_ahead``: its reserve-ahead chunk in minor units when IAAS_RESERVE_AHEAD
      does not name it (0: reserve exactly the shortfall);
    - ``catalog``: the module, in the app, whose ``install(apps, schema_editor)`` installs
      its catalog (a data migration; tests whose flush erased it run it again);
    - ``demo``: the module, in the app, with its part in operations' demo commands:
      ``race_price()``, ``race_purchase(owner_id=, wallet_id=)`` (demo_race) and
      ``seed_purchase(owner_id=, wallet_id=)`` (seed_demo, once per customer).
    """

    default_auto_field = "django.db.models.BigAutoField"
    spender: str = ""
    metered = ""
    sold = ""
    service_pages: tuple[tuple[str, str], ...] = ()
    reserve_ahead = 0
    catalog = "migrations.0002_catalog"
    demo = "demo"

    def ready(self) -> None:
        from iaas.contracts import bus, selling
        from iaas.contracts.events import ChargeRefunded, ChargeSettled, ReleaseRequested

        spender = import_string(self.spender or f"{self.name}.spending.spender")
        # The spender finds this config by its models' app label, and reads there what the
        # registry shows (label, pages, reserve-ahead default, service model).
        if spender.app_label != self.label:
            raise ValueError(f"{self.spender or self.name}: its models are not in app {self.label!r}")
        if (spender.usage_model is not None) != bool(self.metered):
            raise ValueError(f"{spender.context}: a usage model and its metered services go together")
        context = spender.context
        bus.subscribe(ReleaseRequested, spender.release_on_request, name=f"{context}.release_on_request")
        # Events about one context's charges reach that context only.
        bus.subscribe(
            ChargeRefunded,
            spender.record_refund,
            name=f"{context}.record_refund",
            when=spender.addressed_here,
        )
        bus.subscribe(
            ChargeSettled,
            spender.record_settlement,
            name=f"{context}.record_settlement",
            batch=spender.record_settlements,
            when=spender.addressed_here,
        )
        selling.register(spender)

    def wallet_pages(self):
        """The links the wallet page's "Follow the money" shows for this context, in order:
        its services, then its charges and its allowance (the kit's tables)."""
        from iaas.contracts.selling import WalletPage

        pages = [*self.service_pages, ("charge", "charges"), ("allowance", "allowance")]
        return tuple(
            WalletPage(url_name=f"{self.label}_{model}_changelist", title=f"{self.verbose_name} {noun}")
            for model, noun in pages
        )

    def metered_services(self):
        """Its ``MeteredServices`` (iaas.spending.metered), or None when it meters nothing."""
        return import_string(f"{self.name}.{self.metered}") if self.metered else None

    def sold_services(self):
        """Its ``SoldServices`` (iaas.spending.sold), or None when it registered none."""
        path = self.sold or self.metered
        return import_string(f"{self.name}.{path}") if path else None

    def install_catalog(self, apps=apps) -> None:
        import_module(f"{self.name}.{self.catalog}").install(apps, None)

    def demo_module(self) -> ModuleType:
        return import_module(f"{self.name}.{self.demo}")


def selling_context_config(name: str) -> SellingContextConfig:
    """The AppConfig of the selling context registered under ``name``
    (``iaas.contracts.selling.UnknownContext`` when none is)."""
    from iaas.contracts import selling

    return apps.get_app_config(selling.context(name).app_label)


def metered_contexts(names: list[str] | None = None) -> list:
    """The ``MeteredServices`` of every registered context that meters (or of those
    ``names``, each of which must meter), in the registry's order."""
    configs = [selling_context_config(name) for name in names] if names else selling_context_configs()
    found = []
    for config in configs:
        metered = config.metered_services()
        if metered is None and names:
            raise ValueError(f"{config.label} meters nothing")
        if metered is not None:
            found.append(metered)
    return found


def sold_contexts() -> list:
    """The ``SoldServices`` of every registered context that registered them, in the
    registry's order."""
    return [sold for config in selling_context_configs() if (sold := config.sold_services()) is not None]


def selling_context_configs() -> list[SellingContextConfig]:
    """Every registered selling context's AppConfig, in the registry's order (by name)."""
    from iaas.contracts import selling

    return [selling_context_config(name) for name in selling.names()]
