"""Cloud's event handlers."""

from __future__ import annotations

from iaas.contracts.events import ChargeRefunded, ChargeSettled, ReleaseRequested

from .spending import spender


def release_on_request(event: ReleaseRequested) -> None:
    spender.release_on_request(event)


def record_refund(event: ChargeRefunded) -> None:
    spender.record_refund(event)


def record_settlement(event: ChargeSettled) -> None:
    spender.record_settlement(event)


def record_settlements(events: list[ChargeSettled]) -> set:
    return spender.record_settlements(events)
