"""The web UI's screenshots in docs/img, made again from a fresh digits bundle.

    .venv/bin/python scripts/ui_screenshots.py [--out docs/img] [--work DIR]

Trains the `digits` recipe (as `mlfactory demo` does, about a minute on 2 cores), serves its
bundle with a prediction log, starts `mlfactory ui` on it, sends the traffic that docs/ui.md
describes and saves the Predict, Model card and Monitoring pages as headless Chromium draws
them (Debian's, as in the UI tests: tests/ui/browser.py). Needs the `ui` extra.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.ui.browser: the one way Chromium is driven here

from tests.ui.browser import (  # noqa: E402
    click_button,
    result_text,
    start_chromium,
    wait_for,
    wait_for_text,
)

from mlfactory.demo_traffic import inverted_png  # noqa: E402
from mlfactory.serving.process import start_server  # noqa: E402
from mlfactory.ui.launch import start_ui  # noqa: E402

WIDTH = 1400
WINDOWS_OVER_TIME = 4


@dataclass(frozen=True)
class TrafficPlan:
    """What docs/ui.md says the screenshots show: `requests` requests of `per_request` held-out
    digits each, `interval_s` apart; in the last `shifted` of them, half the digits inverted
    (foreign inputs); the true labels of every `label_every`-th prediction sent back."""

    requests: int = 14
    per_request: int = 12
    interval_s: float = 1.5
    shifted: int = 5
    label_every: int = 3
    seed: int = 0


def send_traffic(api_url: str, digits: Sequence[tuple[Path, str]], plan: TrafficPlan) -> int:
    """POST the plan's requests (`X-Request-ID: batch-00`, ...) and its feedback; the number of
    predictions sent. `digits`: (PNG file, true label) pairs, at least the plan's total."""
    needed = plan.requests * plan.per_request
    if len(digits) < needed:
        raise ValueError(f"the plan sends {needed} digits; only {len(digits)} given")
    chosen = random.Random(plan.seed).sample(list(digits), needed)
    sent = 0
    for number in range(plan.requests):
        batch = chosen[number * plan.per_request : (number + 1) * plan.per_request]
        shifted = number >= plan.requests - plan.shifted
        files = [
            (
                "files",
                (
                    path.name,
                    inverted_png(path.read_bytes()) if shifted and i % 2 else path.read_bytes(),
                ),
            )
            for i, (path, _) in enumerate(batch)
        ]
        request_id = f"batch-{number:02d}"
        answer = httpx.post(
            f"{api_url}/v1/predict", files=files, headers={"X-Request-ID": request_id}, timeout=60
        )
        answer.raise_for_status()
        labels = [
            {"request_id": request_id, "input_index": i, "label": label}
            for i, (_, label) in enumerate(batch)
            if (sent + i) % plan.label_every == 0
        ]
        httpx.post(f"{api_url}/v1/feedback", json=labels, timeout=60).raise_for_status()
        sent += len(batch)
        if number + 1 < plan.requests:
            time.sleep(plan.interval_s)
    return sent


def capture_pages(
    driver: WebDriver, ui_url: str, digit: Path, out: Path, logged: int
) -> list[Path]:
    """Save the three pages under `out` (ui-model-card.png, ui-monitoring.png, ui-predict.png):
    the card, Monitoring cut into `WINDOWS_OVER_TIME` windows, and the Predict page after
    classifying `digit`. Each waits for its content (bounded, tests.ui.browser): Monitoring
    for the `logged` predictions of the traffic. The window's size is restored at the end."""
    out.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    try:
        return _capture(driver, ui_url, digit, out, logged)
    finally:
        driver.set_window_size(size["width"], size["height"])


def _capture(driver: WebDriver, ui_url: str, digit: Path, out: Path, logged: int) -> list[Path]:
    driver.get(f"{ui_url}/model-card")
    wait_for_text(driver, "Confusion matrix")
    shots = [_page_shot(driver, out / "ui-model-card.png")]

    # before the Predict page adds its prediction: the log holds the traffic alone
    driver.get(f"{ui_url}/monitoring")
    wait_for_text(driver, f"The last {logged} predictions")
    wait_for_text(driver, "Over time")
    windows = wait_for(driver, ".st-key-bk input")
    windows.send_keys(Keys.CONTROL, "a")
    windows.send_keys(str(WINDOWS_OVER_TIME), Keys.ENTER)
    driver.execute_script("document.activeElement.blur()")  # no focus ring in the picture
    wait_for_text(driver, "Drift check p-values")
    time.sleep(2.0)  # the charts' drawing (Vega) ends after the text shows
    shots.append(_page_shot(driver, out / "ui-monitoring.png"))

    driver.get(ui_url)
    wait_for(driver, "input[type='file']").send_keys(str(digit))
    wait_for_text(driver, digit.name)
    click_button(driver, "Classify")
    result_text(driver)
    shots.append(_page_shot(driver, out / "ui-predict.png"))
    return shots


def _page_shot(driver: WebDriver, path: Path) -> Path:
    """The whole page: the window grows to the height of Streamlit's content first."""
    driver.set_window_size(WIDTH, 1000)
    time.sleep(1.0)
    main = wait_for(driver, "[data-testid='stMain']")
    height = int(driver.execute_script("return arguments[0].scrollHeight", main))
    driver.set_window_size(WIDTH, height + 140)  # the window's frame, beyond the viewport
    time.sleep(1.0)
    driver.save_screenshot(str(path))
    return path


def train_digits(work: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """The digits recipe trained in `work` (its MLflow store there too): the bundle and the
    test split's digits, which the model never saw."""
    from mlfactory.config.loader import load_recipe
    from mlfactory.training.train import train

    overrides = [f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}"]
    result = train(load_recipe("digits", overrides), work / "run", progress=False, force=True)
    assert result.bundle is not None
    test = result.dataset.split("test")
    return result.bundle.path, [(Path(str(i.path)), str(i.label)) for i in test]


def make_screenshots(work: Path, out: Path) -> list[Path]:
    """Train, then `serve_and_capture` the traffic of docs/ui.md in a Chromium of its own."""
    bundle, digits = train_digits(work)
    driver = start_chromium()
    try:
        return serve_and_capture(driver, bundle, digits, work, out, TrafficPlan())
    finally:
        driver.quit()


def serve_and_capture(
    driver: WebDriver,
    bundle: Path,
    digits: Sequence[tuple[Path, str]],
    work: Path,
    out: Path,
    plan: TrafficPlan,
) -> list[Path]:
    """Serve `bundle` (its log in `work`), send `plan`'s traffic of `digits`, start the UI on
    the server and save its three pages under `out`; the servers stop at the end."""
    # the server's settings are its defaults, whatever this shell sets, and a log of its own
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFACTORY_")}
    env["MLFACTORY_LOG_URL"] = f"sqlite:///{work / 'predictions.db'}"
    with ExitStack() as stack:
        api = start_server(bundle, work / "server.log", env, cwd=work)
        stack.callback(api.stop)
        logged = send_traffic(api.url, digits, plan)
        ui = start_ui(api.url, work / "ui.log")
        stack.callback(ui.stop)
        seven = next(path for path, label in digits if label == "7")
        return capture_pages(driver, ui.url, seven, out, logged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--work", type=Path, help="where the run, log and servers' output go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ui-screenshots-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        for shot in make_screenshots(work, args.out):
            print(shot)


if __name__ == "__main__":
    main()
