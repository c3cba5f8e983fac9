"""A payment provider whose answers the test writes (``ScriptedProvider``), for the service
tests of saved cards and automatic top-ups: what a card provider may answer (a success,
a refusal, a payment still processing, an outage) without a network. Each call records
how deep in transactions it was made, so tests can show that no provider call is made
inside one. The Stripe path itself is tested against the Stripe double
(tests/payments)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

from django.db import connection

from iaas.billing.payments import PaymentOutcome, SetupOutcome


@dataclass
class Call:
    what: str
    subject: object
    atomic_depth: int


@dataclass
class Script:
    """What the provider answers next, in order; an empty script succeeds."""

    charges: list = field(default_factory=list)  # PaymentOutcome, an exception, or None (success)
    setups: list = field(default_factory=list)  # SetupOutcome or an exception; empty: a card saved at once
    calls: list[Call] = field(default_factory=list)
    baseline_depth: int = 0

    def of(self, what: str) -> list[Call]:
        return [call for call in self.calls if call.what == what]

    def inside_a_transaction(self) -> list[Call]:
        """The calls made deeper in transactions than the test itself runs."""
        return [call for call in self.calls if call.atomic_depth > self.baseline_depth]


class ScriptedProvider:
    name = "scripted"
    script: ClassVar[Script] = Script()
    _lock = threading.Lock()

    def _record(self, what: str, subject: object):
        with self._lock:
            self.script.calls.append(Call(what, subject, len(connection.atomic_blocks)))
            queue = {"charge_saved": self.script.charges, "setup_start": self.script.setups}.get(what)
            return queue.pop(0) if queue else None

    def start(self, top_up) -> PaymentOutcome:
        self._record("start", top_up.id)
        return PaymentOutcome(succeeded=True, provider_reference=f"scripted-{top_up.id}")

    def charge_saved(self, top_up, method) -> PaymentOutcome:
        step = self._record("charge_saved", top_up.id)
        if isinstance(step, BaseException):
            raise step
        if step is None:
            return PaymentOutcome(succeeded=True, provider_reference=f"scripted-{top_up.id}")
        return step

    def setup_start(self, method) -> SetupOutcome:
        step = self._record("setup_start", method.id)
        if isinstance(step, BaseException):
            raise step
        return step or SetupOutcome(
            setup_reference=f"scripted-setup-{method.id}",
            method_reference=f"scripted-card-{method.id}",
            brand="mastercard",
            last4="4444",
            exp_month=7,
            exp_year=2031,
        )

    def method_remove(self, method) -> None:
        self._record("method_remove", method.id)

    def cancel(self, provider_reference: str) -> None:
        self._record("cancel", provider_reference)


def refused(code: str = "card_declined", message: str = "Your card was declined.", reference: str = ""):
    return PaymentOutcome(
        succeeded=False,
        provider_reference=reference,
        refused=True,
        failure_code=code,
        failure_message=message,
    )


def script_provider(settings) -> Script:
    """Make the ScriptedProvider the configured provider, with an empty script (call it
    once the test's database is set up: the depth of the test's own transaction is the
    baseline)."""
    settings.IAAS_PAYMENT_PROVIDER = f"{__name__}.ScriptedProvider"
    ScriptedProvider.script = Script(baseline_depth=len(connection.atomic_blocks))
    return ScriptedProvider.script
