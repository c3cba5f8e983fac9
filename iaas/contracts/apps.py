from django.apps import AppConfig


class ContractsConfig(AppConfig):
    name = "iaas.contracts"
    label = "contracts"
    verbose_name = "Events (outbox)"
    default_auto_field = "django.db.models.BigAutoField"
