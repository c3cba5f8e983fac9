"""Cloud's instance of the shared spending mechanism."""

from django.utils import timezone

from iaas.contracts.types import CLOUD
from iaas.spending.spender import Spender

from .models import Allowance, Charge, Release, Server, Usage


def describe_usage(records: list[Usage]) -> dict[int, str]:
    """How a closed usage record reads on the charge, the invoice and the ledger: the
    server's name and plan, the hours and the span (one query for the batch)."""
    servers = dict(
        Server.objects.filter(id__in={r.service_id for r in records}).values_list("id", "name").iterator()
    )
    return {
        r.id: (
            f"Server {servers.get(r.service_id, r.service_id)}, {r.hours - r.closed_hours} hour(s) "
            f"{_moment(r.closed_until)} to {_moment(r.accrued_until)}"
        )
        for r in records
    }


def _moment(value) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M}"


spender = Spender(
    context=CLOUD,
    allowance_model=Allowance,
    charge_model=Charge,
    release_model=Release,
    usage_model=Usage,
    describe_usage=describe_usage,
)
