"""Cloud's instance of the shared spending mechanism."""

from iaas.contracts.types import CLOUD
from iaas.spending.spender import Spender

from .models import Allowance, Charge, Release, Usage

spender = Spender(
    context=CLOUD, allowance_model=Allowance, charge_model=Charge, release_model=Release, usage_model=Usage
)
