from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Customers' webhooks and emails: a consumer of events like any context, outside
    the money transaction (its subscriptions are relayed), reaching no context's tables."""

    name = "iaas.notifications"
    label = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import handlers

        handlers.subscribe_all()
