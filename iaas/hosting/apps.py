from django.apps import AppConfig


class HostingConfig(AppConfig):
    name = "iaas.hosting"
    label = "hosting"
    verbose_name = "Hosting"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from iaas.contracts import bus, selling
        from iaas.contracts.events import ReleaseRequested
        from iaas.spending.spender import SellingContextAdapter

        from .handlers import release_on_request
        from .spending import spender

        bus.subscribe(ReleaseRequested, release_on_request, name="hosting.release_on_request")
        selling.register(SellingContextAdapter(spender))
