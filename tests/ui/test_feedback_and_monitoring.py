"""Feedback from the Predict page into the prediction log, and the Monitoring page, in Chromium."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageOps
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import create_engine, select, update

from mlfactory.monitoring.log_window import read_window
from mlfactory.monitoring.notes import SPLITS_DISAGREE_NOTE
from mlfactory.monitoring.profile import load_profile
from mlfactory.serving.log_tables import predictions
from mlfactory.times import utc_time
from mlfactory.training.train import TrainResult
from mlfactory.ui.client import MONITOR_TOKEN_ENV, ApiClient
from mlfactory.ui.launch import start_ui
from mlfactory.ui.monitoring_page import (
    DEFAULT_BUCKETS,
    P_VALUE_FLOOR,
    history_frame,
    time_chart,
    window_span,
)
from tests.conftest import PER_CLASS, write_digit_folder
from tests.ui.browser import click_button, main_text, wait_for, wait_for_text
from tests.ui.conftest import Deployment
from tests.ui.test_monitoring_page import layer_values
from tests.ui.test_pages import classify_files


def test_feedback_from_the_page_lands_in_the_log(
    chromium: WebDriver, image_deployment: Deployment, held_out_digit: Path, tmp_path: Path
) -> None:
    image = image_deployment
    classify_files(chromium, image, held_out_digit)
    choice = wait_for(chromium, ".st-key-result-0 [data-testid='stSelectbox'] input")
    choice.click()
    choice.send_keys("7", Keys.ENTER)
    click_button(chromium, "Send feedback")
    wait_for_text(chromium, "Feedback recorded: input 0 is '7'.")
    chromium.save_screenshot(str(tmp_path / "feedback.png"))
    meta = httpx.get(f"{image.api.url}/v1/model").json()
    window = read_window(image.log_url, meta["name"], meta["version"], labels=meta["labels"])
    assert window.true_labels is not None and "7" in list(window.true_labels)


def test_the_monitoring_page_shows_checks_and_history(
    chromium: WebDriver, image_deployment: Deployment, trained_digits: TrainResult, tmp_path: Path
) -> None:
    image = image_deployment
    send_digits(image, tmp_path)
    # the server wants its monitoring token, which the UI was started with
    assert httpx.get(f"{image.api.url}/v1/monitoring/drift").status_code == 401
    drift_url = f"{image.api.url}/v1/monitoring/drift"
    drift = httpx.get(drift_url, params={"last": 1000}, headers=image.auth).json()
    # the true label of the most out-of-distribution input, sent back: listed with it
    top = drift["ood"]["flagged"][0]
    sent = {"request_id": top["request_id"], "input_index": top["input_index"], "label": "3"}
    feedback_url = f"{image.api.url}/v1/feedback"
    assert httpx.post(feedback_url, json=sent, headers=image.auth, timeout=30).is_success
    drift = httpx.get(drift_url, params={"last": 1000}, headers=image.auth).json()
    assert drift["ood"]["flagged"][0]["true_label"] == "3"
    chromium.get(f"{image.ui.url}/monitoring")
    wait_for_text(chromium, f"The last {drift['window']['n']} predictions")
    wait_for_text(chromium, window_span(drift["window"]))  # "from ... to ... UTC"
    check_tables(chromium, drift)
    wait_for_text(chromium, "Over time")
    assert len(chromium.find_elements(By.CSS_SELECTOR, "[data-testid='stVegaLiteChart']")) >= 4
    # the p-values over time, drawn against the verdict's level as the page draws them
    history = ApiClient(image.api.url, token=image.token).history(1000, DEFAULT_BUCKETS)
    frame, p_columns = history_frame(history)
    assert p_columns == [f"p {check['name']}" for check in drift["checks"]]
    drawn = frame[p_columns].stack()  # checks that did not run in a slice have no point
    assert len(drawn) and drawn.min() >= P_VALUE_FLOOR and drawn.max() <= 1.0
    # the share its threshold lets through: 1 %, or 1 / (n + 1) of a small calibration set
    profile = load_profile(trained_digits.bundle.path)
    assert profile is not None and drift["ood"]["expected"] == profile.ood.expected_rate
    level_line = layer_values(time_chart(frame, p_columns, (drift["level"], "level"), True))
    assert level_line == [drift["level"]]
    assert "Traceback" not in main_text(chromium)
    chromium.save_screenshot(str(tmp_path / "monitoring.png"))
    click_button(chromium, "Refresh")
    wait_for_text(chromium, f"The last {drift['window']['n']} predictions")
    wait_for_text(chromium, window_span(drift["window"]))  # "from ... to ... UTC"
    check_periods(chromium, image, drift["window"]["n"])


def send_digits(image: Deployment, folder: Path) -> None:
    """50 held-out digits in requests of 10, a third of them inverted: drift, and a note on
    what the estimated accuracy assumes."""
    digits = sorted(write_digit_folder(folder / "d", 5, offset=PER_CLASS + 20).glob("*/*.png"))
    inverted = sorted(write_digit_folder(folder / "i", 3, offset=PER_CLASS + 30).glob("*/*.png"))
    for path in inverted:
        ImageOps.invert(Image.open(path)).save(path)
    digits = inverted + digits
    for start in range(0, len(digits), 10):
        files = [("files", (p.name, p.read_bytes())) for p in digits[start : start + 10]]
        assert httpx.post(f"{image.api.url}/v1/predict", files=files, timeout=30).is_success


def check_tables(chromium: WebDriver, drift: dict[str, Any]) -> None:
    """The page's checks, labels and most out-of-distribution inputs, as the API's `drift`."""
    checks = wait_for(chromium, "[data-testid='stTable']")
    table = checks.text
    assert all(check["name"] in table for check in drift["checks"])
    # each check's verdict: drift, no drift, or why it did not run
    cells = [row.text.split() for row in checks.find_elements(By.CSS_SELECTOR, "tbody tr")]
    rows = {words[0]: " ".join(words) for words in cells if words}
    for check in drift["checks"]:
        assert check["status"] in rows[check["name"]], rows[check["name"]]
    assert "nan" not in table and "None" not in table
    # the drift note (and the one on the reference when the model's splits happen to disagree)
    assert drift["drift"] is True
    [note] = [n for n in drift["notes"] if not n.startswith(SPLITS_DISAGREE_NOTE)]
    # at the server's level: the verdict of its gauges and alerts
    wait_for_text(chromium, f"Drift detected (at level {drift['level']:.4g}, holm-corrected)")
    wait_for_text(chromium, note)
    # each column says whether it is by predicted label or by true label
    wait_for_text(chromium, "as the true label (feedback)")
    tables = chromium.find_elements(By.CSS_SELECTOR, "[data-testid='stTable']")
    assert len(tables) == 3
    for column in ("predicted share, window", "true label, live accuracy"):
        assert column in tables[1].text
    shown = f"{100 * drift['labels'][0]['window_share']:.1f}%"
    assert shown in tables[1].text
    assert all(row["label"] in tables[1].text for row in drift["labels"])
    # no live accuracy without feedback: a dash, not a list bullet drawn from "-"
    assert "\u2013" in tables[1].text
    assert not tables[1].find_elements(By.CSS_SELECTOR, "li")
    # the inverted digits, flagged: listed by the request that sent them, to find and label
    wait_for_text(chromium, "Most out-of-distribution inputs")
    flagged = drift["ood"]["flagged"]
    assert len(flagged) == 10 and flagged[0]["request_id"] in tables[2].text
    assert f"{flagged[0]['ood_score']:.4g}" in tables[2].text
    listed = tables[2].find_elements(By.CSS_SELECTOR, "tbody tr")
    assert "true_label" in tables[2].text and listed[0].text.split()[-1] == "3"
    assert listed[1].text.split()[-1] == "\u2013"  # no feedback for it
    assert utc_time(flagged[0]["time"]) in tables[2].text  # to the second, UTC


def check_periods(chromium: WebDriver, image: Deployment, logged: int) -> None:
    """The last hour, once the 10 oldest of `logged` predictions are two hours old; and the
    note when Last predictions cuts the period short."""
    drift_url = f"{image.api.url}/v1/monitoring/drift"
    # The 10 oldest predictions move two hours back: the last hour holds the others.
    engine = create_engine(image.log_url)
    with engine.begin() as connection:
        oldest = select(predictions.c.id).order_by(predictions.c.id).limit(10).scalar_subquery()
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        connection.execute(
            update(predictions).where(predictions.c.id.in_(oldest)).values(ts=two_hours_ago)
        )
    engine.dispose()
    params = {"last": 1000, "since": "1h"}
    hour = httpx.get(drift_url, params=params, headers=image.auth).json()["window"]["n"]
    assert hour == logged - 10
    period = wait_for(chromium, ".st-key-period input")
    period.click()
    period.send_keys("last hour", Keys.ENTER)
    wait_for_text(chromium, f"{hour} predictions, last hour")
    assert "Traceback" not in main_text(chromium)
    # the last hour holds more than the 10 predictions asked for: the page says so
    last = wait_for(chromium, ".st-key-last input")
    last.send_keys(Keys.CONTROL, "a")
    last.send_keys("10", Keys.ENTER)
    wait_for_text(chromium, "10 predictions, last hour")
    wait_for_text(
        chromium,
        "the last hour holds at least 10 predictions: this window is the latest 10 of them, "
        "not the whole period (Last predictions sets the number)",
    )
    # Streamlit warned of no deprecated argument while drawing the page
    assert "use_container_width" not in image.ui.output.read_text()


def test_monitoring_of_a_bundle_without_profile_is_a_clear_message(
    chromium: WebDriver, tiny_deployments: dict[str, Deployment]
) -> None:
    text = tiny_deployments["text"]  # a tiny bundle: no reference profile
    refusal = httpx.get(f"{text.api.url}/v1/monitoring/drift", params={"last": 100})
    assert refusal.status_code == 404
    chromium.get(f"{text.ui.url}/monitoring")
    alert = wait_for(chromium, "[data-testid='stAlertContentInfo']").text
    detail = refusal.json()["detail"].replace("`", "")  # `code` in the detail is drawn as code
    assert alert == f"Monitoring: {detail} (404)"


def test_a_ui_without_the_servers_token_says_how_to_get_in(
    chromium: WebDriver, image_deployment: Deployment, tmp_path: Path
) -> None:
    """The image server guards its reports; a UI started without its token (this environment
    has none) shows the refusal and the way in, and no traceback."""
    assert image_deployment.token and MONITOR_TOKEN_ENV not in os.environ
    ui = start_ui(image_deployment.api.url, tmp_path / "ui.log")
    try:
        chromium.get(f"{ui.url}/monitoring")
        alert = wait_for(chromium, "[data-testid='stAlertContentError']").text
        assert alert == (
            "missing monitoring token: send 'Authorization: Bearer <token>' (401): "
            "start mlfactory ui with MLFACTORY_MONITOR_TOKEN set to the server's"
        )
        assert "Traceback" not in main_text(chromium)
    finally:
        ui.stop()
