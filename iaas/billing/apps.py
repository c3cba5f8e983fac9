from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "iaas.billing"
    label = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from iaas.contracts import billing, bus
        from iaas.contracts.events import AllowanceReleased, AutoTopUpDue, ChargeRecorded, ChargesRecorded

        from .contract import BillingContractImpl
        from .handlers import (
            apply_release,
            mark_auto_top_up_due,
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
        # Billing's own: in the money database, never relayed; no customer is told of it.
        bus.subscribe(AutoTopUpDue, mark_auto_top_up_due, name="billing.auto_top_up_due")
