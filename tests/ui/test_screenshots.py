"""scripts/ui_screenshots.py, which makes the docs' screenshots again: its traffic and its three
pages, on the session's trained digits bundle with a small plan (the script trains its own)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from PIL import Image
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import create_engine, func, select

from mlfactory.serving.log_tables import feedback, predictions
from mlfactory.training.train import TrainResult
from tests.conftest import PER_CLASS, write_digit_folder

SCRIPT = Path(__file__).parents[2] / "scripts" / "ui_screenshots.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ui_screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_docs_screenshots_are_whole_pages_of_the_planned_traffic(
    chromium: WebDriver, trained_digits: TrainResult, tmp_path: Path
) -> None:
    script = load_script()
    assert trained_digits.bundle is not None
    folder = write_digit_folder(tmp_path / "digits", 3, offset=PER_CLASS + 5)
    digits = [(path, path.parent.name) for path in sorted(folder.glob("*/*.png"))]
    plan = script.TrafficPlan(requests=4, per_request=6, interval_s=0.0, shifted=2)
    size = chromium.get_window_size()
    out = tmp_path / "img"

    shots = script.serve_and_capture(
        chromium, trained_digits.bundle.path, digits, tmp_path, out, plan
    )

    # Monitoring was captured on the 24 predictions of the plan (it waits for the count); the
    # Predict page's classification came after it
    names = ["ui-model-card.png", "ui-monitoring.png", "ui-predict.png"]
    assert shots == [out / name for name in names]
    sizes = {}
    for shot in shots:
        with Image.open(shot) as image:
            sizes[shot.name] = image.size
    assert {width for width, _ in sizes.values()} == {script.WIDTH}
    # the whole page, not the window's part of it
    assert sizes["ui-monitoring.png"][1] > size["height"], sizes
    engine = create_engine(f"sqlite:///{tmp_path / 'predictions.db'}")
    with engine.connect() as connection:
        query = select(predictions.c.request_id).order_by(predictions.c.id)
        ids = connection.execute(query).scalars().all()
        labelled = connection.execute(select(func.count()).select_from(feedback)).scalar()
    engine.dispose()
    assert ids[:24] == [f"batch-{n // 6:02d}" for n in range(24)]
    assert len(ids) == 25 and labelled == 8  # the Predict page's digit; every third labelled
    assert chromium.get_window_size() == size  # the session's browser, as it was
