"""Hosting's event handlers."""

from __future__ import annotations

from iaas.contracts.events import ChargeRefunded, ReleaseRequested

from .spending import spender


def release_on_request(event: ReleaseRequested) -> None:
    spender.release_on_request(event)


def record_refund(event: ChargeRefunded) -> None:
    spender.record_refund(event)
