from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate


def sync_operator_groups(sender, apps=None, using="default", **kwargs) -> None:
    """After every migrate (and a test flush): give the operator groups the view
    permissions of models added since their migration. Only adds."""
    from .roles import install_operator_groups

    install_operator_groups(apps or global_apps)


class OperationsConfig(AppConfig):
    name = "iaas.operations"
    label = "operations"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Sent for this app after the apps before it in INSTALLED_APPS: their
        # permissions exist by then.
        post_migrate.connect(sync_operator_groups, sender=self)

        # The shared admin's one-time tokens are kept in this app's table.
        from iaas.common import request_ids
        from iaas.common.admin import register_token_claim
        from iaas.contracts import bus, wallets

        from .models import token_claim
        from .wallet_status import wallet_status_change

        register_token_claim(token_claim)
        # Each outbox row records the request that published it (relayed with its event).
        bus.bind_request_ids(request_ids.current)
        # Every freeze and unfreeze goes through operations (allowances, then the wallet).
        wallets.bind(wallet_status_change)
