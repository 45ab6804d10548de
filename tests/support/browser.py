"""Headless Chromium for tests, driven through Selenium and Debian's chromedriver.

Nothing is downloaded: the driver and browser paths are given (Selenium Manager is never
asked, SE_OFFLINE is set), the profile is a new directory in the test's temp dir and the
browser's own network features (sync, updates, background requests) are off. Selenium
calls block: run them in a thread (``threads.deferToThread``) while the reactor serves
the page under test.
"""

from __future__ import annotations

import os

from tests.support.peers import missing_peer, require_program

CHROMIUM_ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      "--window-size=1280,1400")


def start_chromium(testcase, javascript: bool = True):
    """A Selenium WebDriver on a new headless Chromium, quit at cleanup."""
    chromium = require_program("chromium")
    chromedriver = require_program("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing_peer("selenium is not installed (pip install selenium)")
    os.environ["SE_OFFLINE"] = "true"  # read by Selenium Manager, which must never run
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    options = Options()
    options.binary_location = chromium
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={os.path.join(directory, 'profile')}")
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    service = Service(executable_path=chromedriver, log_output=os.path.join(directory, "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    testcase.addCleanup(driver.quit)
    return driver


def screenshot(testcase, driver, name: str) -> str:
    """Save what ``driver`` shows as ``name``.png in the test's temp dir; returns the path."""
    path = os.path.abspath(testcase.mktemp()) + f"-{name}.png"
    driver.save_screenshot(path)
    return path
