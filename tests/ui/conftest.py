"""Fixtures of the web UI tests: servers on real bundles, the UI on each, headless Chromium.

The image bundle is the session's trained digits model (tests/conftest.py); the text and audio
bundles are the tiny real ones of tests/serving/tiny_bundles.py. Servers and UIs listen on free
ports of 127.0.0.1 and are stopped at the end of the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from mlfactory.serving.process import ServerProcess
from mlfactory.training.train import TrainResult
from mlfactory.ui.client import MONITOR_TOKEN_ENV
from mlfactory.ui.launch import start_ui
from tests.conftest import PER_CLASS, write_digit_folder
from tests.serving.live_server import start_server
from tests.serving.tiny_bundles import tiny_bundle
from tests.ui.browser import start_chromium

MONITOR_TOKEN = "ui-test-monitor-token"


@dataclass
class Deployment:
    """A server on one bundle, the UI talking to it, and the server's prediction log."""

    api: ServerProcess
    ui: ServerProcess
    log_url: str
    token: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        """The headers of a request to the monitoring and feedback endpoints."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@pytest.fixture(scope="session")
def chromium() -> Iterator[WebDriver]:
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def deploy(
    stack: ExitStack, bundle: Path, workdir: Path, token: str | None = None, **settings: str
) -> Deployment:
    """Serve `bundle` and start the UI on it; both stop when `stack` closes. With `token`,
    the server guards its monitoring and feedback endpoints with it, and the UI is started
    with it, as a user would (`MLFACTORY_MONITOR_TOKEN` in both environments); `settings`:
    more of the server's (`ServingSettings` fields)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_url = f"sqlite:///{workdir / 'predictions.db'}"
    guard = {"monitor_token": token} if token else {}
    api = start_server(bundle, workdir, log_url=log_url, **guard, **settings)
    stack.callback(api.stop)
    with pytest.MonkeyPatch.context() as env:
        if token:
            env.setenv(MONITOR_TOKEN_ENV, token)
        ui = start_ui(api.url, workdir / "ui.log")
    stack.callback(ui.stop)
    return Deployment(api, ui, log_url, token)


@pytest.fixture(scope="module")
def image_deployment(
    tmp_path_factory: pytest.TempPathFactory, trained_digits: TrainResult
) -> Iterator[Deployment]:
    """The session's trained digits bundle (with its reference profile), served with a
    monitoring token, and the UI."""
    with ExitStack() as stack:
        root = tmp_path_factory.mktemp("ui-image")
        yield deploy(stack, trained_digits.bundle.path, root, MONITOR_TOKEN)


@pytest.fixture(scope="module")
def tiny_deployments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Deployment]]:
    """A tiny text and a tiny audio bundle (no reference profile), served, and the UI on each."""
    root = tmp_path_factory.mktemp("ui-tiny")
    with ExitStack() as stack:
        yield {
            modality: deploy(
                stack, tiny_bundle(root / f"{modality}-bundle", modality), root / modality
            )
            for modality in ("text", "audio")
        }


@pytest.fixture(scope="module")
def deployments(
    image_deployment: Deployment, tiny_deployments: dict[str, Deployment]
) -> dict[str, Deployment]:
    """An image (trained digits), a text and an audio deployment."""
    return {"image": image_deployment, **tiny_deployments}


@pytest.fixture(scope="session")
def held_out_digit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MNIST 7 the digits model never saw (past the digits it trained on)."""
    folder = write_digit_folder(tmp_path_factory.mktemp("held-out"), 1, offset=PER_CLASS + 5)
    return next((folder / "7").glob("*.png"))
