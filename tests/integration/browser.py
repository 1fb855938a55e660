"""A real headless browser for the dashboard's tests and bench/dashboard.py: Debian's chromium
driven by selenium through Debian's chromedriver, never a downloaded one (SE_OFFLINE), with
Chrome's performance log (every request and websocket the page makes) and console log on.

Chromium aborts a navigation with ERR_NETWORK_CHANGED when the host's interfaces change while
it loads, and leaves its error page: on the CI host other tests add and remove veth pairs,
network namespaces and podman networks meanwhile (a full CI failed test_dashboard_logs' first
load so). The driver's `get` loads the page again then, a bounded number of times."""

from __future__ import annotations

import os

__all__ = ["chromium"]

NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
LOADS = 5  # a navigation tried this many times while the host's interfaces keep changing


def chromium(width: int = 1280, height: int = 800):
    os.environ["SE_OFFLINE"] = "true"  # selenium must never fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})

    class Chromium(webdriver.Chrome):
        def get(self, url: str) -> None:
            for _ in range(LOADS):
                super().get(url)
                if not self.current_url.startswith("chrome-error://") or \
                        NETWORK_CHANGED not in (self.page_source or ""):
                    return

    return Chromium(service=Service("/usr/bin/chromedriver"), options=options)
