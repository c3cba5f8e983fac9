from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "iaas.audit"
    label = "audit"
    verbose_name = "History of changes"
    default_auto_field = "django.db.models.BigAutoField"
