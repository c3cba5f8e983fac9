"""Cloud's event handlers."""

from __future__ import annotations

from iaas.contracts.events import ReleaseRequested

from .spending import spender


def release_on_request(event: ReleaseRequested) -> None:
    spender.release_on_request(event)
