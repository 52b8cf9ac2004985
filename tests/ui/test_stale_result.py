"""A result kept on the Predict page while the server swaps its model (`POST
/v1/admin/reload`): the page says the result is of another model, and sends no feedback for it."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import create_engine, func, select

from mlfactory.serving.log_tables import feedback
from mlfactory.training.train import TrainResult
from tests.serving.tiny_bundles import tiny_bundle
from tests.ui.browser import (
    click_button,
    main_text,
    main_text_showing,
    wait_for,
    wait_for_text,
)
from tests.ui.conftest import deploy
from tests.ui.test_pages import classify_files

ADMIN_TOKEN = "ui-test-admin-token"


def test_a_result_of_a_model_reloaded_since_is_said_to_be_stale(
    chromium: WebDriver, trained_digits: TrainResult, held_out_digit: Path, tmp_path: Path
) -> None:
    """A digit classified by a tiny cat-or-dog model, then the digits model reloaded in its
    place: "Send feedback" would have named a label the served model does not have."""
    with ExitStack() as stack:
        tiny = tiny_bundle(tmp_path / "tiny", "image")
        image = deploy(stack, tiny, tmp_path / "image", admin_token=ADMIN_TOKEN)
        assert "Send feedback" in classify_files(chromium, image, held_out_digit)
        reload = httpx.post(
            f"{image.api.url}/v1/admin/reload",
            json={"bundle": str(trained_digits.bundle.path)},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
        )
        assert reload.status_code == 200, reload.text
        now = reload.json()["current"]
        click_button(chromium, "Send feedback")
        warning = wait_for(chromium, "[data-testid='stAlertContentWarning']").text
        assert warning == (
            f"These predictions came from tiny-image 1.0.0; the server now serves "
            f"{now['name']} {now['version']}: classify again to send feedback."
        )
        assert "Traceback" not in main_text(chromium) and "Error" not in main_text(chromium)
        main_text_showing(chromium, held_out_digit.name)  # the result is still shown
        assert not chromium.find_elements(By.XPATH, "//button[normalize-space(.)='Send feedback']")
        engine = create_engine(image.log_url)
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(feedback)).scalar() == 0
        engine.dispose()
        # the digits model has logged nothing yet: its monitoring page says so
        chromium.get(f"{image.ui.url}/monitoring")
        wait_for_text(chromium, "No predictions logged yet")
        wait_for_text(chromium, "No predictions logged in this window yet.")
        assert "Traceback" not in main_text(chromium) and "The last 0" not in main_text(chromium)
