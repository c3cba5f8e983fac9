from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "iaas.billing"
    label = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from iaas.contracts import billing, bus
        from iaas.contracts.events import AllowanceReleased, ChargeRecorded, ChargesRecorded

        from .contract import BillingContractImpl
        from .handlers import (
            apply_release,
            settle_charge,
            settle_charges,
            settle_many_recorded_charges,
            settle_recorded_charges,
        )

        billing.bind(BillingContractImpl())
        bus.subscribe(ChargeRecorded, settle_charge, name="billing.settle_charge", batch=settle_charges)
        bus.subscribe(
            ChargesRecorded,
            settle_recorded_charges,
            name="billing.settle_recorded_charges",
            batch=settle_many_recorded_charges,
        )
        bus.subscribe(AllowanceReleased, apply_release, name="billing.apply_release")
