"""A bundle's strings are shown as text on every page: no link, no image (a tracking pixel)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.serving.tiny_bundles import tiny_bundle
from tests.ui.browser import main_text_showing
from tests.ui.conftest import deploy

SOURCE = "x` [link](http://phish.example/a) ` www.phish.example"
LABELS = ["![p](http://127.0.0.1:1/p.png)", "[cat](http://phish.example/c)"]
NAME = "[m](http://phish.example/m)"


def _hostile_bundle(folder: Path) -> Path:
    bundle = tiny_bundle(folder, "image")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta.update(name=NAME, labels=LABELS)
    meta.setdefault("config", {}).setdefault("data", {})["source"] = SOURCE
    (bundle / "bundle.json").write_text(json.dumps(meta))
    return bundle


def _assert_nothing_live(chromium: WebDriver) -> None:
    main = chromium.find_element(By.CSS_SELECTOR, "[data-testid='stMain']")
    links = [a.get_attribute("href") or "" for a in main.find_elements(By.TAG_NAME, "a")]
    assert not [href for href in links if "phish.example" in href.partition("#")[0]], links
    images = [img.get_attribute("src") for img in main.find_elements(By.TAG_NAME, "img")]
    assert not [src for src in images if src and "127.0.0.1:1" in src], images


def test_a_hostile_bundle_shows_its_strings_as_text(chromium: WebDriver, tmp_path: Path) -> None:
    with ExitStack() as stack:
        deployment = deploy(stack, _hostile_bundle(tmp_path / "bundle"), tmp_path / "served")
        chromium.get(f"{deployment.ui.url}/model-card")
        # fails (TimeoutException) unless the page shows every string as text
        main_text_showing(
            chromium, "Lineage", f"Model card: {NAME}", f"Source: {SOURCE}", ", ".join(LABELS)
        )
        _assert_nothing_live(chromium)
        chromium.get(f"{deployment.ui.url}/predict")
        main_text_showing(chromium, "Classify", f"labels: {', '.join(LABELS)}")
        _assert_nothing_live(chromium)
