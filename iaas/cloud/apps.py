from django.apps import AppConfig


class CloudConfig(AppConfig):
    name = "iaas.cloud"
    label = "cloud"
    verbose_name = "Cloud"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from iaas.contracts import bus, selling
        from iaas.contracts.events import ChargeRefunded, ChargeSettled, ReleaseRequested
        from iaas.spending.spender import SellingContextAdapter

        from .handlers import record_refund, record_settlement, record_settlements, release_on_request
        from .models import Server
        from .spending import spender

        bus.subscribe(ReleaseRequested, release_on_request, name="cloud.release_on_request")
        # Events about one context's charges reach that context only.
        bus.subscribe(ChargeRefunded, record_refund, name="cloud.record_refund", when=spender.addressed_here)
        bus.subscribe(
            ChargeSettled,
            record_settlement,
            name="cloud.record_settlement",
            batch=record_settlements,
            when=spender.addressed_here,
        )
        # Metered: reconciliation holds each server's usage records against it (I11).
        selling.register(SellingContextAdapter(spender, service_model=Server, paid_until_field="paid_until"))
