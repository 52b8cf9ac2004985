"""`POST /v1/admin/reload`: token checks, swaps, refusals that keep the old model serving."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.corrupt_bundles import CORRUPTIONS, Corruption, corrupt_copy

from .conftest import DigitImage, upload
from .test_bad_inputs import assert_error
from .tiny_bundles import copy_with_version, tiny_bundle

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def next_bundle(image_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image bundle again, as version 0.0.2."""
    return copy_with_version(image_bundle, tmp_path_factory.mktemp("next") / "b", "0.0.2")


@pytest.fixture
def admin_client(image_bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = ServingSettings(admin_token=TOKEN, log_url=f"sqlite:///{tmp_path / 'p.db'}")
    with TestClient(create_app(image_bundle, settings)) as client:
        yield client


def predict_version(client: TestClient, digit: DigitImage) -> str:
    response = client.post("/v1/predict", files=[upload("d.png", digit.read_bytes())])
    assert response.status_code == 200, response.text
    return str(response.json()["model"]["version"])


def test_admin_is_disabled_without_a_token(client: TestClient) -> None:
    response = client.post("/v1/admin/reload", headers=AUTH)
    assert_error(response, 403, "admin API is disabled", "MLFACTORY_ADMIN_TOKEN")


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}]
)
def test_missing_or_wrong_token_is_401(admin_client: TestClient, headers: dict[str, str]) -> None:
    response = admin_client.post("/v1/admin/reload", headers=headers, json={"bundle": "/x"})
    assert_error(response, 401, "admin token")
    assert response.headers["www-authenticate"] == "Bearer"


def test_reload_swaps_in_a_new_bundle(
    admin_client: TestClient, next_bundle: Path, digit_images: list[DigitImage]
) -> None:
    assert predict_version(admin_client, digit_images[0]) == "0.0.1"
    assert admin_client.get("/openapi.json").json()["info"]["version"] == "0.0.1"
    response = admin_client.post(
        "/v1/admin/reload", headers=AUTH, json={"bundle": str(next_bundle)}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "previous": {"name": "digits-serving-test", "version": "0.0.1"},
        "current": {"name": "digits-serving-test", "version": "0.0.2"},
        "bundle": str(next_bundle),
    }
    assert predict_version(admin_client, digit_images[0]) == "0.0.2"
    assert admin_client.get("/v1/model").json()["version"] == "0.0.2"
    metrics = admin_client.get("/metrics").text
    served = 'mlfactory_model_info{modality="image",name="digits-serving-test",version="0.0.2"} 1.0'
    assert served in metrics and 'version="0.0.1"' not in metrics
    assert 'mlfactory_model_reloads_total{result="ok"} 1.0' in metrics
    info = admin_client.get("/openapi.json").json()["info"]
    assert info["version"] == "0.0.2"


def test_reload_without_a_body_rereads_the_served_bundle(admin_client: TestClient) -> None:
    before: Predictor = admin_client.app.state.predictor  # type: ignore[attr-defined]
    response = admin_client.post("/v1/admin/reload", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["previous"] == response.json()["current"]
    assert admin_client.app.state.predictor is not before  # type: ignore[attr-defined]


def broken_bundles(image_bundle: Path, root: Path) -> list[tuple[Any, int, str]]:
    corrupt = copy_with_version(image_bundle, root / "corrupt", "9")
    (corrupt / "model.onnx").write_bytes(b"not an onnx model")
    more_labels = copy_with_version(image_bundle, root / "labels", "9")
    meta = json.loads((more_labels / "bundle.json").read_text())
    (more_labels / "bundle.json").write_text(json.dumps({**meta, "labels": ["a", "b", "c"]}))
    return [
        ({"bundle": str(root / "missing")}, 422, "bundle not found"),
        ({"bundle": str(root / ("a" * 300))}, 422, "File name too long"),
        ({"bundle": str(corrupt)}, 422, "cannot be loaded by ONNX Runtime"),
        ({"bundle": str(more_labels)}, 422, "names 3 labels"),
        ({"bundle": str(tiny_bundle(root / "text", "text"))}, 409, "is a text bundle"),
        ({"bundle": 3}, 422, "invalid JSON body"),
        ({"path": "/x"}, 422, "invalid JSON body"),
        ({"bundle": ""}, 422, "bundle: String should have at least 1 character"),
    ]


def test_a_bad_bundle_is_refused_and_the_old_model_keeps_serving(
    admin_client: TestClient, image_bundle: Path, tmp_path: Path, digit_images: list[DigitImage]
) -> None:
    for body, status, fragment in broken_bundles(image_bundle, tmp_path):
        response = admin_client.post("/v1/admin/reload", headers=AUTH, json=body)
        assert_error(response, status, fragment)
        assert predict_version(admin_client, digit_images[1]) == "0.0.1"
    metrics = admin_client.get("/metrics").text
    assert 'mlfactory_model_reloads_total{result="failed"} 5.0' in metrics


def test_the_body_is_json_within_its_limit_like_feedback(
    admin_client: TestClient, next_bundle: Path
) -> None:
    """Declared as another type: 415; declared over 64 KiB: 413 before a byte is read (the
    client does not wait for the body to time out); a UTF-8 byte order mark is fine."""
    body = json.dumps({"bundle": str(next_bundle)}).encode()
    as_text = {**AUTH, "Content-Type": "text/plain"}
    refused = admin_client.post("/v1/admin/reload", headers=as_text, content=body)
    assert_error(refused, 415, "unsupported content type 'text/plain'", '{"bundle": ')
    huge = {**AUTH, "Content-Type": "application/json", "Content-Length": str(200 * 2**20)}
    too_large = admin_client.post("/v1/admin/reload", headers=huge, content=body)
    assert_error(too_large, 413, "209715200 bytes exceeds the limit of 65536 bytes")
    json_type = {**AUTH, "Content-Type": "application/json"}
    response = admin_client.post(
        "/v1/admin/reload", headers=json_type, content=b"\xef\xbb\xbf" + body
    )
    assert response.status_code == 200, response.text
    assert response.json()["current"]["version"] == "0.0.2"


def test_in_flight_requests_finish_on_the_model_they_started_with(
    admin_client: TestClient, next_bundle: Path, digit_images: list[DigitImage]
) -> None:
    old: Predictor = admin_client.app.state.predictor  # type: ignore[attr-defined]
    entered, release = threading.Event(), threading.Event()
    real_run = old.run

    def held_run(encoded: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return real_run(encoded)

    old.run = held_run  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(predict_version, admin_client, digit_images[2])
        assert entered.wait(30)
        reloaded = admin_client.post(
            "/v1/admin/reload", headers=AUTH, json={"bundle": str(next_bundle)}
        )
        assert reloaded.status_code == 200, reloaded.text
        queued_after = pool.submit(predict_version, admin_client, digit_images[3])
        release.set()
        assert in_flight.result(timeout=30) == "0.0.1"
        assert queued_after.result(timeout=30) == "0.0.2"


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=lambda c: c.name)
def test_every_corrupt_bundle_is_a_422_and_the_old_model_keeps_serving(
    admin_client: TestClient, tmp_path: Path, digit_images: list[DigitImage], corruption: Corruption
) -> None:
    good = tiny_bundle(tmp_path / "good", "image")
    bundle = corrupt_copy(good, tmp_path / "corrupt", corruption)
    response = admin_client.post("/v1/admin/reload", headers=AUTH, json={"bundle": str(bundle)})
    assert_error(response, 422, "cannot reload", corruption.fragment)
    assert predict_version(admin_client, digit_images[0]) == "0.0.1"
