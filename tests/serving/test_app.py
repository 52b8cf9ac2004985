"""The API on a real exported bundle: predictions, metadata, health and the OpenAPI schema."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mlfactory.bundle import load_bundle
from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.numerics import (
    assert_distinct_predictions,
    assert_same_prediction,
    assert_sums_to_one,
)

from .conftest import LABELS, DigitImage, upload
from .tiny_bundles import tiny_bundle


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_model_shows_the_bundle_summary(client: TestClient, image_bundle: Path) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    body = response.json()
    assert body.pop("limits")["max_files"] == ServingSettings().max_files
    assert body == load_bundle(image_bundle).meta.summary()
    assert body["name"] == "digits-serving-test"
    assert body["modality"] == "image"
    assert body["labels"] == LABELS
    assert body["metrics"] == {"accuracy": 0.1}


def test_model_says_what_one_request_may_hold(image_bundle: Path) -> None:
    """The server's limits, for clients that check before they send (the web UI does)."""
    settings = ServingSettings(
        max_upload_bytes=5000, max_files=3, max_text_chars=200, max_request_bytes=12_000
    )
    with TestClient(create_app(image_bundle, settings)) as client:
        limits = client.get("/v1/model").json()["limits"]
    assert limits == {
        "max_upload_bytes": 5000,
        "max_files": 3,
        "max_text_chars": 200,
        "max_request_bytes": 12_000,
    }


def test_predict_one_file(client: TestClient, digit_images: list[DigitImage]) -> None:
    digit = digit_images[0]
    response = client.post("/v1/predict", files=[upload(digit.path.name, digit.read_bytes())])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "digits-serving-test", "version": "0.0.1"}
    [prediction] = body["predictions"]
    assert list(prediction["probabilities"]) == LABELS
    assert_sums_to_one(prediction["probabilities"].values(), len(LABELS))
    assert prediction["label"] == max(
        prediction["probabilities"], key=prediction["probabilities"].get
    )
    assert prediction["score"] == prediction["probabilities"][prediction["label"]]


def test_predict_many_files_keeps_request_order(
    client: TestClient, image_bundle: Path, digit_images: list[DigitImage]
) -> None:
    # One digit of each class, in a scrambled order; each answer must match that file alone.
    chosen = [digit_images[i] for i in (37, 2, 18, 25, 9, 30, 13)]
    response = client.post(
        "/v1/predict", files=[upload(d.path.name, d.read_bytes()) for d in chosen]
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(chosen)
    reference = Predictor.from_path(image_bundle)
    rows = []
    for digit, prediction in zip(chosen, predictions, strict=True):
        [alone] = reference.predict([digit.read_bytes()])
        # A batch of 7 and a batch of 1 may run different fp32 kernels.
        row = [prediction["probabilities"][label] for label in LABELS]
        assert_same_prediction(np.array(row), np.array(list(alone.probabilities.values())))
        assert_sums_to_one(row, len(LABELS))
        rows.append(row)
    # The untrained model still tells these inputs apart, so order is really being checked.
    assert_distinct_predictions(rows)


def test_part_content_type_is_not_trusted(
    client: TestClient, digit_images: list[DigitImage]
) -> None:
    digit = digit_images[1]
    response = client.post(
        "/v1/predict",
        files=[upload("scan.bin", digit.read_bytes(), "application/octet-stream")],
    )
    assert response.status_code == 200, response.text


def test_preprocessing_and_onnx_run_off_the_event_loop(
    client: TestClient, digit_images: list[DigitImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor: Predictor = client.app.state.predictor  # type: ignore[attr-defined]
    seen: list[tuple[str, bool]] = []

    def on_event_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def traced(name: str, method: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            seen.append((name, on_event_loop()))
            return method(*args)

        return wrapper

    monkeypatch.setattr(predictor, "encode", traced("encode", predictor.encode))
    monkeypatch.setattr(predictor, "run", traced("run", predictor.run))
    files = [upload(d.path.name, d.read_bytes()) for d in digit_images[:2]]
    assert client.post("/v1/predict", files=files).status_code == 200
    assert seen == [("encode", False), ("encode", False), ("run", False)]


def test_model_is_loaded_once_at_start_up(
    image_bundle: Path, digit_images: list[DigitImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[object] = []
    original = Predictor.__init__

    def counting_init(self: Predictor, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        sessions.append(self.session)

    monkeypatch.setattr(Predictor, "__init__", counting_init)
    app = create_app(image_bundle, ServingSettings(ort_intra_op_threads=1))
    assert sessions == []  # creating the app does not load the model
    with TestClient(app) as client:
        assert len(sessions) == 1
        digit = digit_images[3]
        for _ in range(3):
            response = client.post("/v1/predict", files=[upload("d.png", digit.read_bytes())])
            assert response.status_code == 200
    assert len(sessions) == 1


def test_docs_page(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_openapi_documents_bodies_and_errors(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    operation = schema["paths"]["/v1/predict"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert list(body["content"]) == ["multipart/form-data"]
    files = body["content"]["multipart/form-data"]["schema"]["properties"]["files"]
    assert files["type"] == "array"
    assert files["items"] == {"type": "string", "format": "binary"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PredictResponse"}
    for status in ("413", "415", "422"):
        error = operation["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    components = schema["components"]["schemas"]
    assert components["ErrorResponse"]["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in components  # no list-shaped error is advertised
    prediction = components["PredictionOut"]["properties"]
    assert set(prediction) == {"label", "score", "probabilities", "ood_score", "in_distribution"}
    assert prediction["probabilities"]["additionalProperties"] == {"type": "number"}
    model = schema["paths"]["/v1/model"]["get"]["responses"]["200"]["content"]
    assert model["application/json"]["schema"] == {"$ref": "#/components/schemas/ModelInfo"}
    assert schema["paths"]["/health"]["get"]["responses"]["200"]["content"]


def test_health_is_503_until_the_model_is_loaded(image_bundle: Path) -> None:
    client = TestClient(create_app(image_bundle, ServingSettings()))  # lifespan not started
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"detail": "the model is not loaded yet; retry shortly"}


@pytest.mark.parametrize("path", ["/health", "/v1/model", "/metrics"])
def test_head_answers_like_get_without_a_body(client: TestClient, path: str) -> None:
    got, head = client.get(path), client.head(path)
    assert got.status_code == head.status_code == 200
    assert head.headers["content-type"] == got.headers["content-type"]
    assert "x-request-id" in head.headers


def docs_links(page: str) -> list[str]:
    """Every URL a docs page makes the browser fetch."""
    attributes = re.findall(r'(?:src|href|spec-url)="([^"]*)"', page)
    return attributes + re.findall(r"url: '([^']*)'", page)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_are_served_offline(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    links = docs_links(response.text)
    assert "/openapi.json" in links and any(link.endswith(".js") for link in links)
    assert "http://" not in response.text and "https://" not in response.text
    for link in links:
        assert link.startswith("/") and not link.startswith("//"), link  # this server only
        fetched = client.get(link)
        assert fetched.status_code == 200, link
        assert len(fetched.content) > 1000 or link.endswith(".json"), link
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404
    assert client.get("/docs/assets/LICENSE").status_code == 404


def test_bundle_name_is_escaped_in_the_docs_titles(tmp_path: Path) -> None:
    folder = tiny_bundle(tmp_path / "b", "image")
    bundle = load_bundle(folder)
    bundle.meta.name = "</title><script>alert(1)</script>"
    bundle.save_meta()
    settings = ServingSettings(log_url=f"sqlite:///{tmp_path / 'p.db'}")
    with TestClient(create_app(folder, settings)) as client:
        for path in ("/docs", "/redoc"):
            page = client.get(path).text
            assert "<script>alert(1)</script>" not in page
            assert "&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert client.get("/openapi.json").json()["info"]["title"].endswith(bundle.meta.name)


def test_a_16_bit_png_is_classified_like_its_8_bit_original(
    client: TestClient, digit_images: list[DigitImage]
) -> None:
    """The probe's 16-bit digit decoded almost white and still got a confident answer."""
    digit = digit_images[7]
    pixels = np.asarray(Image.open(digit.path), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels * 257).save(buffer, format="PNG")  # 0-255 spread over 0-65535
    answers = [
        client.post("/v1/predict", files=[upload(name, data)]).json()["predictions"][0]
        for name, data in (("8-bit.png", digit.read_bytes()), ("16-bit.png", buffer.getvalue()))
    ]
    assert answers[0] == answers[1]
