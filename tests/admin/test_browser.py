"""End to end in a real headless Chromium: a Finance operator logs in (password, then
their authenticator's code), finds a customer's wallet by search, makes an adjustment
and sees the new ledger entry; a new Finance operator sets up their second factor from
the QR code page and reaches the console.

Debian's chromium and chromium-driver are required (scripts/ensure-browser.sh installs
them; `make test` runs it): without them this test fails, it never skips. The wallet
page it ends on is the README's screenshot, docs/admin-wallet.png, and the set-up page
is docs/admin-2fa.png: written when missing or when IAAS_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from django.db import transaction
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from iaas.billing.models import LedgerEntry
from iaas.contracts import bus
from iaas.notifications import catalog, sender, webhooks
from iaas.notifications.models import WebhookDelivery
from iaas.operations.roles import FINANCE
from tests.admin.conftest import PASSWORD, make_operator
from tests.notifications.receiver import Receiver
from tests.notifications.test_webhook_delivery import sample_events

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("IAAS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IAAS_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "admin-wallet.png"
SET_UP_SCREENSHOT = SCREENSHOT.with_name("admin-2fa.png")
DELIVERY_SCREENSHOT = SCREENSHOT.with_name("admin-webhook-delivery.png")
TOP_UP_SCREENSHOT = SCREENSHOT.with_name("admin-card-top-up.png")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1280,900",
]


@pytest.fixture
def browser(tmp_path, monkeypatch):
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"The browser test needs Debian's chromium and chromium-driver; missing: {', '.join(missing)}. "
            "Run scripts/ensure-browser.sh (apt-get install chromium chromium-driver).",
            pytrace=False,
        )
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never goes to the network
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_finance_finds_a_wallet_adjusts_it_and_sees_the_entry(live_server, browser, books, finance):
    wait = WebDriverWait(browser, 30)

    def click(by, value):
        wait.until(ec.element_to_be_clickable((by, value))).click()

    browser.get(f"{live_server.url}/admin/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(finance.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    click(By.CSS_SELECTOR, "input[type=submit]")

    # The second factor: the code step, with the code the authenticator shows now.
    code = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#otp-form input[name=code]")))
    code.send_keys(current_code(TOTPDevice.objects.get(user=finance).bin_key))
    click(By.CSS_SELECTOR, "#otp-form input[type=submit]")

    click(By.LINK_TEXT, "Wallets")
    search = wait.until(ec.presence_of_element_located((By.ID, "searchbar")))
    search.send_keys("alice@customers.example")
    search.submit()
    # The unfiltered list shows the same link: wait for the search's page, so the click
    # never lands on the old page while it goes away (a stale element).
    wait.until(ec.staleness_of(search))
    wait.until(ec.url_contains("q=alice"))
    click(By.PARTIAL_LINK_TEXT, "alice <alice@customers.example>")

    click(By.CSS_SELECTOR, ".object-tools a[href$='/adjust/']")
    click(By.CSS_SELECTOR, "input[name=direction][value=credit]")
    browser.find_element(By.NAME, "amount").send_keys("12.50")
    browser.find_element(By.NAME, "reason").send_keys("Goodwill credit for the outage of 3 March")
    click(By.CSS_SELECTOR, "#adjustment_form input[type=submit]")

    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success")))
    assert "Credited 12.50 EUR" in message.text
    ledger = browser.find_element(By.CSS_SELECTOR, ".field-recent_ledger table")
    newest = ledger.find_elements(By.CSS_SELECTOR, "tbody tr")[0].text
    assert "Adjustment: Goodwill credit for the outage of 3 March" in newest
    assert "12.50 EUR" in newest
    assert finance.username in newest

    entry = LedgerEntry.objects.get(description="Adjustment: Goodwill credit for the outage of 3 March")
    assert (entry.amount, entry.created_by_id) == (1250, finance.pk)

    save_screenshot(browser, SCREENSHOT)


def test_a_new_finance_operator_sets_up_the_second_factor(live_server, browser, operator_groups):
    nina = make_operator("nina", group=FINANCE)
    wait = WebDriverWait(browser, 30)

    def click(by, value):
        wait.until(ec.element_to_be_clickable((by, value))).click()

    browser.get(f"{live_server.url}/admin/billing/wallet/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(nina.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    click(By.CSS_SELECTOR, "input[type=submit]")

    # No device yet: the set-up page, with the QR code and the secret to type instead.
    secret = wait.until(ec.presence_of_element_located((By.ID, "otp-secret"))).text
    assert browser.find_element(By.CSS_SELECTOR, "#otp-qr svg").is_displayed()
    assert "otpauth://totp/" in browser.find_element(By.ID, "otp-uri").text
    save_screenshot(browser, SET_UP_SCREENSHOT)
    browser.find_element(By.NAME, "code").send_keys(current_code(base64.b32decode(secret.replace(" ", ""))))
    click(By.CSS_SELECTOR, "#otp-form input[type=submit]")

    # The recovery codes, once; then on to the page first asked for.
    shown = wait.until(ec.presence_of_element_located((By.ID, "recovery-codes"))).text.split()
    stored = StaticToken.objects.filter(device__user=nina).values_list("token", flat=True)
    assert sorted(shown) == sorted(stored)
    assert len(shown) == 10
    click(By.ID, "continue")
    wait.until(ec.url_contains("/admin/billing/wallet/"))
    assert wait.until(ec.presence_of_element_located((By.ID, "changelist")))
    assert TOTPDevice.objects.get(user=nina).confirmed


def test_finance_sees_a_webhook_delivery_with_its_attempts_and_sends_it_again(
    live_server, browser, books, finance, settings
):
    settings.IAAS_WEBHOOK_FIRST_RETRY_SECONDS = 0  # the retries are due at once
    receiver = Receiver(statuses=[500, 503]).start()
    try:
        owner_id = books["wallet"].owner_id
        webhooks.endpoint_create(owner_id=owner_id, url=receiver.url, event_types=list(catalog.NAMES))
        with transaction.atomic():
            bus.publish(sample_events(owner_id)["server.suspended"])
        bus.deliver_pending()
        sender.send_due()  # 500, 503, then 204
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == ("succeeded", 3)

        wait = WebDriverWait(browser, 30)
        browser.get(f"{live_server.url}/admin/")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(finance.username)
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        code = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#otp-form input[name=code]")))
        code.send_keys(current_code(TOTPDevice.objects.get(user=finance).bin_key))
        browser.find_element(By.CSS_SELECTOR, "#otp-form input[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "site-name")))

        browser.get(f"{live_server.url}/admin/notifications/webhookdelivery/{delivery.pk}/change/")
        attempts = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, ".field-attempts_table table"))
        )
        assert [row.text.split()[0] for row in attempts.find_elements(By.CSS_SELECTOR, "tbody tr")] == [
            "3",
            "2",
            "1",
        ]
        wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Send again']"))).click()
        message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success")))
        assert "Queued again" in message.text
        delivery.refresh_from_db()
        assert (delivery.status, delivery.redeliveries) == ("pending", 1)
        save_screenshot(browser, DELIVERY_SCREENSHOT)
    finally:
        receiver.stop()


def test_finance_sees_a_card_top_up_with_its_stripe_payment_and_what_was_taken_back(
    live_server, browser, books, finance
):
    top_up = books["payments"]["top_up"]
    wait = WebDriverWait(browser, 30)
    browser.get(f"{live_server.url}/admin/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(finance.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    code = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#otp-form input[name=code]")))
    code.send_keys(current_code(TOTPDevice.objects.get(user=finance).bin_key))
    browser.find_element(By.CSS_SELECTOR, "#otp-form input[type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "site-name")))

    browser.get(f"{live_server.url}/admin/billing/topup/{top_up.pk}/change/")
    link = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "a[href*='dashboard.stripe.com']")))
    assert link.text == "pi_books_paid"
    assert link.get_attribute("href").endswith("/payments/pi_books_paid")
    page = browser.find_element(By.ID, "content").text
    assert "ch_books:refunded:500" in page  # what the provider took back, listed on the top-up
    save_screenshot(browser, TOP_UP_SCREENSHOT)


def current_code(key: bytes) -> str:
    return f"{totp(key):06d}"


def save_screenshot(browser, path: Path) -> None:
    """Write the README's screenshot when it is missing or IAAS_UPDATE_SCREENSHOTS=1."""
    if path.exists() and os.environ.get("IAAS_UPDATE_SCREENSHOTS") != "1":
        return
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(height, 900), 2400))
    path.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(path))
