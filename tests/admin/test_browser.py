"""End to end in a real headless Chromium: a Finance operator logs in, finds a
customer's wallet by search, makes an adjustment and sees the new ledger entry.

Debian's chromium and chromium-driver are required (scripts/ensure-browser.sh installs
them; `make test` runs it): without them this test fails, it never skips. The wallet
page it ends on is the README's screenshot, docs/admin-wallet.png, written when missing
or when IAAS_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from iaas.billing.models import LedgerEntry
from tests.admin.conftest import PASSWORD

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("IAAS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IAAS_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "admin-wallet.png"
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

    if not SCREENSHOT.exists() or os.environ.get("IAAS_UPDATE_SCREENSHOTS") == "1":
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(max(height, 900), 2400))
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
