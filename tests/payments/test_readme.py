"""The README tells operators which Stripe events to send: exactly the ones the webhook
applies (a missing one would be lost money; an extra one, noise)."""

from __future__ import annotations

import re
from pathlib import Path

from iaas.billing.payments.stripe_events import EVENT_TYPES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_the_stripe_events_the_webhook_applies():
    text = README.read_text()
    listed = text[text.index("and these events:") : text.index("Reveal its signing secret")]
    assert sorted(re.findall(r"`([a-z_]+\.[a-z_.]+)`", listed)) == EVENT_TYPES
