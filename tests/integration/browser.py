"""A real headless browser for the dashboard's tests and bench/dashboard.py: Debian's chromium
driven by selenium through Debian's chromedriver, never a downloaded one (SE_OFFLINE), with
Chrome's performance log (every request and websocket the page makes) and console log on.

Chromium aborts a navigation with ERR_NETWORK_CHANGED when the host's interfaces change while
it loads, and leaves its error page: on the CI host other tests add and remove veth pairs,
network namespaces and podman networks meanwhile (full CIs failed test_dashboard_logs' first
load so). The driver's `get` loads the page again then, a bounded number of times, whether
chromedriver raised the error or left Chromium's error page."""

from __future__ import annotations

import os
import time

__all__ = ["chromium"]

NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
LOADS = 5  # a navigation tried this many times while the host's interfaces keep changing


def chromium(width: int = 1280, height: int = 800):
    os.environ["SE_OFFLINE"] = "true"  # selenium must never fetch a browser or a driver
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})

    class Chromium(webdriver.Chrome):
        def get(self, url: str) -> None:
            for attempt in range(LOADS):
                if attempt:
                    time.sleep(1.0)  # the interfaces' change may still be going on
                try:
                    super().get(url)
                except WebDriverException as e:  # chromedriver names some failed loads so
                    if NETWORK_CHANGED not in (e.msg or "") or attempt == LOADS - 1:
                        raise
                    continue
                if not self.load_failed(NETWORK_CHANGED):
                    return

        def load_failed(self, code: str) -> bool:
            """Whether the page is Chromium's error page for `code` (net::ERR_...). WebDriver's
            current_url names the URL asked for even then, and the page's source does not hold
            the code: the document's own URL and text do."""
            url, text = self.execute_script(
                "return [document.URL, document.body ? document.body.innerText : '']")
            return url.startswith("chrome-error://") and code in (text or "")

    return Chromium(service=Service("/usr/bin/chromedriver"), options=options)
