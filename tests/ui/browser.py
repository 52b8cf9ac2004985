"""Driving Debian's Chromium with Selenium: start it headless, wait for Streamlit's content.

Every wait is bounded (`WAIT_S`), so a page that never shows what a test expects fails in
seconds instead of hanging.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

# Debian's packages; elsewhere (GitHub's Ubuntu runners, whose chromium is a snap) the workflow
# points these at the Chrome and chromedriver preinstalled on the runner.
CHROMIUM = Path(os.environ.get("MLFACTORY_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MLFACTORY_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--window-size=1400,1600",
)
WAIT_S = 30.0


def start_chromium() -> WebDriver:
    """Headless Chromium from the Debian packages (never a downloaded browser)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert path.is_file() or shutil.which(path.name), (
            f"{path} is missing: install chromium and chromium-driver (scripts/setup.sh)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def wait_for(driver: WebDriver, css: str, timeout_s: float = WAIT_S) -> WebElement:
    """The first element matching `css`, once it is on the page."""
    wait = WebDriverWait(driver, timeout_s)
    return wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def wait_for_text(driver: WebDriver, text: str, timeout_s: float = WAIT_S) -> None:
    """Wait until `text` shows anywhere in the page body."""
    wait = WebDriverWait(driver, timeout_s)
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), text))


def type_into(driver: WebDriver, css: str, text: str) -> None:
    """Type `text` into the field matching `css`, until the field holds exactly that.

    Streamlit may draw the page again while the first run finishes, which can drop keys typed
    meanwhile: the field is cleared and typed again until its value is `text`.
    """

    def typed(_: WebDriver) -> bool:
        field = wait_for(driver, css)
        if field.get_attribute("value") == text:
            return True
        field.clear()
        field.send_keys(text)
        return field.get_attribute("value") == text

    WebDriverWait(driver, WAIT_S).until(typed)


def result_text(driver: WebDriver, index: int = 0) -> str:
    """The text of result `index` on the Predict page, once it is drawn to its last control."""
    css = f".st-key-result-{index}"
    wait_for(driver, css)
    WebDriverWait(driver, WAIT_S).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), "Send feedback")
    )
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def click_button(driver: WebDriver, label: str) -> None:
    """Click the (first) button whose text is `label`, once it can be clicked."""
    xpath = f"//button[normalize-space(.)='{label}']"
    WebDriverWait(driver, WAIT_S).until(ec.element_to_be_clickable((By.XPATH, xpath))).click()


def main_text(driver: WebDriver) -> str:
    """The text of the app's main area (not the sidebar)."""
    return str(wait_for(driver, "[data-testid='stMain']").text)


def main_text_showing(driver: WebDriver, *texts: str, timeout_s: float = WAIT_S) -> str:
    """The main area's text once it shows every one of `texts` at the same time: Streamlit may
    draw a page again while its first run finishes, and a read in between misses parts of it.

    Raises:
        TimeoutException: the main area never showed them all within `timeout_s`.
    """
    shown: list[str] = []

    def complete(_: WebDriver) -> bool:
        shown[:] = [main_text(driver)]
        return all(text in shown[0] for text in texts)

    WebDriverWait(driver, timeout_s).until(complete, f"the page never showed all of {texts}")
    return shown[0]
