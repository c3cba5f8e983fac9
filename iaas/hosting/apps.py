from django.apps import AppConfig


class HostingConfig(AppConfig):
    name = "iaas.hosting"
    label = "hosting"
    verbose_name = "Hosting"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from iaas.contracts import bus, selling
        from iaas.contracts.events import ChargeRefunded, ChargeSettled, ReleaseRequested
        from iaas.spending.spender import SellingContextAdapter

        from .handlers import record_refund, record_settlement, record_settlements, release_on_request
        from .spending import spender

        bus.subscribe(ReleaseRequested, release_on_request, name="hosting.release_on_request")
        # Events about one context's charges reach that context only.
        bus.subscribe(
            ChargeRefunded, record_refund, name="hosting.record_refund", when=spender.addressed_here
        )
        bus.subscribe(
            ChargeSettled,
            record_settlement,
            name="hosting.record_settlement",
            batch=record_settlements,
            when=spender.addressed_here,
        )
        selling.register(SellingContextAdapter(spender))
