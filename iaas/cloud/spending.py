"""Cloud's instance of the shared spending mechanism."""

from django.utils import timezone

from iaas.contracts.types import CLOUD
from iaas.spending.spender import Spender

from .models import Allowance, Charge, Release, Server, Usage


def describe_usage(records: list) -> dict[int, str]:
    """How a closed usage record reads on the charge, the invoice and the ledger: the
    server's name, the hours and the span (one query for the batch). ``records`` are the
    settlement's rows (a usage record's fields as attributes)."""
    servers = dict(
        Server.objects.filter(id__in={r.service_id for r in records}).values_list("id", "name").iterator()
    )
    zone = timezone.get_current_timezone()
    return {
        r.id: (
            f"Server {servers.get(r.service_id, r.service_id)}, {r.hours - r.closed_hours} hour(s) "
            f"{r.closed_until.astimezone(zone):{MOMENT}} to {r.accrued_until.astimezone(zone):{MOMENT}}"
        )
        for r in records
    }


MOMENT = "%Y-%m-%d %H:%M"


spender = Spender(
    context=CLOUD,
    allowance_model=Allowance,
    charge_model=Charge,
    release_model=Release,
    usage_model=Usage,
    describe_usage=describe_usage,
)
