#!/usr/bin/env python
"""Render every customer email from realistic sample events, so a person can look at
them: docs/emails/<kind>.png (the HTML in headless Chromium, a 700 px wide viewport) and
docs/emails/<kind>.txt (the subject and the text body).

    .venv/bin/python scripts/render_emails.py            # every kind
    .venv/bin/python scripts/render_emails.py low_balance

Composes through iaas.notifications.emails exactly as the event handlers do, without a
database. Needs Debian's chromium and chromium-driver (scripts/ensure-browser.sh)."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "emails"
CHROMIUM = Path(os.environ.get("IAAS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IAAS_CHROMEDRIVER", "/usr/bin/chromedriver"))
WIDTH = 700

sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaas.settings.development")
os.environ.setdefault("IAAS_PUBLIC_URL", "https://cloud.example.com")


def _samples() -> dict[str, tuple[str, dict]]:
    """(kind, facts) by file name: each kind, and the suspension's other clocks."""
    from iaas.contracts import events as e
    from iaas.notifications import emails
    from iaas.notifications.models import EmailSettings, WebhookEndpoint

    at = dt.datetime(2026, 12, 3, 14, 0, tzinfo=dt.UTC)
    wallet = uuid.UUID("3f1c9a4e-8b2d-4c6e-9f10-5a7b3c2d1e0f")
    server = uuid.UUID("9b2e4f6a-1c3d-4e5f-8a7b-6c5d4e3f2a10")
    subscription = uuid.UUID("c4d5e6f7-a8b9-4c0d-9e1f-2a3b4c5d6e7f")
    volume = uuid.UUID("7e8f9a0b-1c2d-4e3f-a4b5-c6d7e8f9a0b1")
    server_resource = {
        "id": str(server),
        "name": "web-1",
        "plan": "s-2vcpu-4gb",
        "wallet": str(wallet),
        "status": "suspended",
        "created_at": "2026-09-14T08:21:05+00:00",
        "paid_until": "2026-12-02T14:00:00+00:00",
        "suspension_causes": ["unpaid"],
        "terminates_at": "2026-12-06T14:00:00+00:00",
        "usage_this_month": {"hours": 38, "amount": 1064},
    }
    subscription_resource = {
        "id": str(subscription),
        "domain": "shop.example.org",
        "plan": "hosting-business",
        "wallet": str(wallet),
        "status": "suspended",
        "suspension_causes": ["operator"],
        "cancels_at": None,
    }
    volume_resource = {
        "id": str(volume),
        "name": "db-data",
        "plan": "ssd",
        "size_gb": 200,
        "wallet": str(wallet),
        "status": "suspended",
        "suspension_causes": ["unpaid"],
        "terminates_at": "2026-12-04T14:00:00+00:00",
    }
    invoice = uuid.UUID("5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f")
    invoice_resource = {
        "id": str(invoice),
        "number": "INV-2026-000187",
        "issued_at": "2026-12-01T02:00:00+00:00",
        "period_start": "2026-11-01T00:00:00+00:00",
        "period_end": "2026-12-01T00:00:00+00:00",
        "currency": "EUR",
        "total": 8_742,
        "lines": [
            {"description": "Server web-1 (s-2vcpu-4gb), 720 hours", "amount": 2_880},
            {"description": "Server worker-2 (s-1vcpu-1gb), 312 hours", "amount": 624},
            {"description": "Hosting shop.example.org (hosting-business), November", "amount": 1_900},
            {"description": "Volume db-data (ssd), 200 GB for 720 hours", "amount": 3_338},
        ],
    }
    endpoint = WebhookEndpoint(
        id=uuid.UUID("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        owner_id=42,
        url="https://hooks.acme-shop.example/iaas/events",
        description="Billing sync",
        failing_since=at - dt.timedelta(days=5, hours=1),
        disabled_at=at,
        disabled_reason="Every attempt failed for 5 days (since 2026-11-28 13:00 UTC).",
    )
    reversed_top_up = uuid.UUID("6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c")
    reversed_resource = {
        "id": str(reversed_top_up),
        "amount": 5_000,
        "currency": "EUR",
        "status": "succeeded",
        "wallet": str(wallet),
        "provider": "stripe",
        "provider_reference": "pi_3QxYz2LkdIwHu7ix0a1b2c3d",
        "origin": "customer",
        "payment_method": None,
        "failed_attempts": 0,
        "failure_code": "",
        "failure_message": "",
        "debt_paid": 0,
        "created_at": "2026-11-18T09:41:12+00:00",
        "completed_at": "2026-11-18T09:41:30+00:00",
    }
    owner = EmailSettings(owner_id=42, address="alice@acme-shop.example")
    samples = {
        "verify_email": ("verify_email", emails.verification_facts(owner)),
        "webhook_endpoint_disabled": ("webhook_endpoint_disabled", emails.endpoint_disabled_facts(endpoint)),
    }
    events = {
        "low_balance": e.LowBalanceReached(
            wallet_id=wallet, owner_id=42, currency="EUR", available=420, threshold=1_000, occurred_at=at
        ),
        "service_suspended": e.ServerSuspended(
            server_id=server,
            wallet_id=wallet,
            reason="insufficient_funds",
            cause="unpaid",
            owner_id=42,
            resource=server_resource,
            occurred_at=at,
        ),
        "service_suspended_operator": e.SubscriptionSuspended(
            subscription_id=subscription,
            wallet_id=wallet,
            reason="Abuse report #4471: phishing page under /login. Reply to support to restore it.",
            cause="operator",
            owner_id=42,
            resource=subscription_resource,
            occurred_at=at,
        ),
        "service_suspended_wallet_blocked": e.VolumeSuspended(
            volume_id=volume,
            wallet_id=wallet,
            reason="wallet_not_active",
            cause="wallet_blocked",
            owner_id=42,
            resource={**volume_resource, "suspension_causes": ["wallet_blocked"], "terminates_at": None},
            occurred_at=at,
        ),
        "service_ends_soon": e.ServiceEndsSoon(
            context="storage",
            kind="volume",
            service_id=volume,
            wallet_id=wallet,
            owner_id=42,
            ends_at=dt.datetime(2026, 12, 4, 14, 0, tzinfo=dt.UTC),
            resource=volume_resource,
            occurred_at=at,
        ),
        "service_ended": e.ServerTerminated(
            server_id=server,
            wallet_id=wallet,
            reason="unpaid",
            owner_id=42,
            resource={**server_resource, "status": "terminated", "terminates_at": None},
            occurred_at=at,
        ),
        "service_resumed": e.ServerResumed(
            server_id=server,
            wallet_id=wallet,
            owner_id=42,
            resource={**server_resource, "status": "active", "suspension_causes": [], "terminates_at": None},
            occurred_at=at,
        ),
        "top_up_succeeded": e.WalletToppedUp(
            top_up_id=uuid.UUID("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
            wallet_id=wallet,
            amount=5_000,
            currency="EUR",
            owner_id=42,
            occurred_at=at,
        ),
        "top_up_failed": e.TopUpFailed(
            top_up_id=uuid.UUID("2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"),
            wallet_id=wallet,
            amount=5_000,
            currency="EUR",
            reason="the card was declined",
            owner_id=42,
            occurred_at=at,
        ),
        # A refund the wallet could pay back (no debt, not frozen), and a dispute that
        # found less available than it took (debt, frozen): the two ends of the kind.
        "top_up_reversed": e.TopUpReversed(
            top_up_id=reversed_top_up,
            wallet_id=wallet,
            kind="refund",
            amount=2_000,
            taken=2_000,
            debt_added=0,
            currency="EUR",
            frozen=False,
            owner_id=42,
            resource=reversed_resource,
            occurred_at=at,
        ),
        "top_up_reversed_dispute": e.TopUpReversed(
            top_up_id=reversed_top_up,
            wallet_id=wallet,
            kind="dispute",
            amount=5_000,
            taken=1_250,
            debt_added=3_750,
            currency="EUR",
            frozen=True,
            owner_id=42,
            resource=reversed_resource,
            occurred_at=at,
        ),
        "invoice_issued": e.InvoiceIssued(
            invoice_id=invoice,
            number="INV-2026-000187",
            owner_id=42,
            currency="EUR",
            total=8_742,
            resource=invoice_resource,
            occurred_at=at,
        ),
        "refund_made": e.ChargeRefunded(
            refund_id=uuid.UUID("3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"),
            wallet_id=wallet,
            charge_id=uuid.UUID("4d5e6f7a-8b9c-4d0e-9f1a-2b3c4d5e6f7a"),
            context="cloud",
            amount=1_064,
            currency="EUR",
            owner_id=42,
            resource={"description": "Server web-1 (s-2vcpu-4gb), 38 hours"},
            occurred_at=at,
        ),
    }
    for name, event in events.items():
        kind = name.removesuffix("_operator").removesuffix("_wallet_blocked").removesuffix("_dispute")
        samples[name] = (kind, emails.FACTS[kind](event))
    return samples


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never goes to the network
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--window-size={WIDTH},900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def _viewport(browser, height: int) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def main(only: list[str]) -> None:
    import django

    django.setup()
    from iaas.notifications import emails
    from iaas.notifications.models import EmailSettings

    owner = EmailSettings(owner_id=42, address="alice@acme-shop.example")
    OUT.mkdir(parents=True, exist_ok=True)
    samples = {name: sample for name, sample in _samples().items() if not only or name in only}
    with tempfile.TemporaryDirectory() as tmp:
        browser = _browser(Path(tmp) / "profile")
        try:
            for name, (kind, facts) in samples.items():
                composed = emails.compose(kind, facts, owner=owner, username="alice")
                (OUT / f"{name}.txt").write_text(f"Subject: {composed.subject}\n\n{composed.text}")
                page = Path(tmp) / f"{name}.html"
                page.write_text(composed.html)
                browser.get(page.as_uri())
                # Measured in a short viewport, so the picture ends where the email does.
                _viewport(browser, 100)
                _viewport(browser, browser.execute_script("return document.documentElement.scrollHeight"))
                (OUT / f"{name}.png").write_bytes(browser.get_screenshot_as_png())
                sys.stdout.write(f"docs/emails/{name}.png  {composed.subject}\n")
        finally:
            browser.quit()


if __name__ == "__main__":
    main(sys.argv[1:])
