"""A bundle whose preprocessing can only give NaN or infinite model inputs is refused when it
loads, and so by `POST /v1/admin/reload` (422), while the served model keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlfactory.errors import BundleError
from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings

from .conftest import DigitImage, upload
from .test_bad_inputs import assert_error
from .tiny_bundles import copy_with_version

TOKEN = "reload-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def with_preprocessing(source: Path, target: Path, **changes: list[float]) -> Path:
    bundle = copy_with_version(source, target, "0.0.9")
    meta_path = bundle / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["preprocessing"].update(changes)
    meta_path.write_text(json.dumps(meta))  # NaN and Infinity, as Python's json writes them
    return bundle


@pytest.fixture
def admin_client(image_bundle: Path) -> Iterator[TestClient]:
    settings = ServingSettings(admin_token=TOKEN)
    with TestClient(create_app(image_bundle, settings)) as started:
        yield started


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"mean": [float("nan"), 0.5, 0.5]},
            "preprocessing.mean: [nan, 0.5, 0.5] must hold finite",
        ),
        ({"std": [float("inf"), 0.5, 0.5]}, "preprocessing.std: [inf, 0.5, 0.5] must hold finite"),
        ({"std": [0.0, 0.5, 0.5]}, "preprocessing.std: [0.0, 0.5, 0.5] must hold numbers > 0"),
        # finite and > 0, but (pixel - mean) / 1e-45 overflows float32: only a test input shows it
        ({"std": [1e-45, 0.5, 0.5]}, "its preprocessing fails on a test input"),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_reload_refuses_preprocessing_that_cannot_serve(
    admin_client: TestClient,
    image_bundle: Path,
    tmp_path: Path,
    digit_images: list[DigitImage],
    changes: dict[str, list[float]],
    fragment: str,
) -> None:
    broken = with_preprocessing(image_bundle, tmp_path / "broken", **changes)
    with pytest.raises(BundleError, match="preprocessing"):
        Predictor.from_path(broken)
    response = admin_client.post("/v1/admin/reload", headers=AUTH, json={"bundle": str(broken)})
    assert_error(response, 422, fragment)
    served = admin_client.post("/v1/predict", files=[upload("d.png", digit_images[0].read_bytes())])
    assert served.status_code == 200, served.text
    assert served.json()["model"]["version"] != "0.0.9"
