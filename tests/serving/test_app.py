"""The API on a real exported bundle: predictions, metadata, health and the OpenAPI schema."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

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


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_model_shows_the_bundle_summary(client: TestClient, image_bundle: Path) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    body = response.json()
    assert body == load_bundle(image_bundle).meta.summary()
    assert body["name"] == "digits-serving-test"
    assert body["modality"] == "image"
    assert body["labels"] == LABELS
    assert body["metrics"] == {"accuracy": 0.1}


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
    assert set(prediction) == {"label", "score", "probabilities"}
    assert prediction["probabilities"]["additionalProperties"] == {"type": "number"}
    model = schema["paths"]["/v1/model"]["get"]["responses"]["200"]["content"]
    assert model["application/json"]["schema"] == {"$ref": "#/components/schemas/ModelInfo"}
    assert schema["paths"]["/health"]["get"]["responses"]["200"]["content"]


def test_health_is_503_until_the_model_is_loaded(image_bundle: Path) -> None:
    client = TestClient(create_app(image_bundle, ServingSettings()))  # lifespan not started
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"detail": "the model is not loaded yet; retry shortly"}
