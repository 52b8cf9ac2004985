"""The HTML model card of `mlfactory report`, opened in real Chromium from a file."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from mlfactory.card_report import write_report
from mlfactory.training.train import TrainResult
from tests.ui.browser import wait_for


def test_the_report_renders_offline_without_console_errors(
    chromium: WebDriver, trained_digits: TrainResult, tmp_path: Path
) -> None:
    page = write_report(trained_digits.bundle.path, tmp_path / "card.html")
    chromium.get_log("browser")  # drop what earlier pages logged
    chromium.get(page.as_uri())
    heading = wait_for(chromium, "h1").text
    assert heading == f"Model card: digits {trained_digits.bundle.meta.version}"
    cells = chromium.find_elements(By.CSS_SELECTOR, "table.confusion td")
    assert len(cells) == len(trained_digits.bundle.meta.labels) ** 2
    chromium.save_screenshot(str(tmp_path / "card-report.png"))
    errors = [entry for entry in chromium.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
