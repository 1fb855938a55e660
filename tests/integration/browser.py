"""A real headless browser for the dashboard's tests and bench/dashboard.py: Debian's chromium
driven by selenium through Debian's chromedriver, never a downloaded one (SE_OFFLINE), with
Chrome's performance log (every request and websocket the page makes) and console log on."""

from __future__ import annotations

import os

__all__ = ["chromium"]


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
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
