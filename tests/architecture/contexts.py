"""The contexts the architecture tests hold to the rules: Billing, and every selling
context registered at start-up (none is named here, so a new one is checked too)."""

from __future__ import annotations

from iaas.spending.apps import selling_context_configs


def selling_packages() -> dict[str, str]:
    """Each registered selling context's app label and its package ("iaas.cloud")."""
    return {config.label: config.name for config in selling_context_configs()}


def context_labels() -> set[str]:
    return {"billing", *selling_packages()}
