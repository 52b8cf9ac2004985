"""The HTML model card of `mlfactory report`, with monitoring, opened in Chromium from a file."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from mlfactory.card_report import write_report
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from mlfactory.training.train import TrainResult
from tests.conftest import PER_CLASS, write_digit_folder
from tests.ui.browser import wait_for


def serve_digits(bundle: Path, log_url: str, folder: Path) -> int:
    """Classify real digits the model never saw through the API; how many were logged."""
    digits = sorted(write_digit_folder(folder, 4, offset=PER_CLASS + 10).glob("*/*.png"))
    with TestClient(create_app(bundle, ServingSettings(log_url=log_url))) as client:
        for start in range(0, len(digits), 8):
            files = [("files", (p.name, p.read_bytes())) for p in digits[start : start + 8]]
            assert client.post("/v1/predict", files=files).status_code == 200
    return len(digits)


def test_the_report_with_a_log_renders_offline_without_console_errors(
    chromium: WebDriver, trained_digits: TrainResult, tmp_path: Path
) -> None:
    bundle = trained_digits.bundle.path
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    served = serve_digits(bundle, log_url, tmp_path / "digits")
    page = write_report(bundle, tmp_path / "card.html", log_url)
    html = page.read_text()
    assert "<section class='mlf-monitoring'>" in html and f"{served}" in html
    assert "None: this bundle has no monitoring reference profile." not in html
    # Leave the page an earlier test opened (a UI whose server has stopped keeps polling it and
    # logging the refusals), then drop what it logged.
    chromium.get("about:blank")
    chromium.get_log("browser")
    chromium.get(page.as_uri())
    heading = wait_for(chromium, "h1").text
    assert heading == f"Model card: digits {trained_digits.bundle.meta.version}"
    cells = chromium.find_elements(By.CSS_SELECTOR, "table.confusion td")
    assert len(cells) == len(trained_digits.bundle.meta.labels) ** 2
    assert chromium.find_elements(By.CSS_SELECTOR, ".mlf-monitoring svg")
    chromium.save_screenshot(str(tmp_path / "card-report.png"))
    errors = [entry for entry in chromium.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
