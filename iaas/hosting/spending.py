"""Hosting's instance of the shared spending mechanism."""

from iaas.spending.spender import Spender

from .models import Allowance, Charge, Release

spender = Spender(
    context="hosting",  # the name Billing knows it under (holds, ledger entries)
    allowance_model=Allowance,
    charge_model=Charge,
    release_model=Release,
)
