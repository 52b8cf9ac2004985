"""Request ids, the prediction log behind `POST /v1/predict`, and `GET /metrics`."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mlfactory.bundle import load_bundle
from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.prediction_log import (
    PredictionLog,
    PredictionLogError,
)
from mlfactory.serving.settings import ServingSettings

from .conftest import LABELS, DigitImage, png_bytes, upload
from .test_bad_inputs import assert_error
from .tiny_bundles import copy_with_version, tiny_bundle, wav_bytes


def metric(text: str, name: str) -> float:
    """The value of one sample line of the exposition, e.g. `name{label="x"}`."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def test_every_prediction_is_logged_with_its_request_id(
    logged_client: TestClient, log_url: str, digit_images: list[DigitImage]
) -> None:
    chosen = digit_images[:3]
    response = logged_client.post(
        "/v1/predict", files=[upload(d.path.name, d.read_bytes()) for d in chosen]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    request_id = body["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.headers["x-request-id"] == request_id
    rows = PredictionLog(log_url).read()
    assert [(r.request_id, r.input_index) for r in rows] == [(request_id, i) for i in range(3)]
    for logged, answered in zip(rows, body["predictions"], strict=True):
        assert (logged.model_name, logged.model_version) == ("digits-serving-test", "0.0.1")
        assert logged.label == answered["label"]
        assert logged.probabilities == answered["probabilities"]  # JSON numbers: exact
        assert logged.latency_ms > 0
        summary = logged.input_summary
        assert (summary["width"], summary["height"], summary["format"]) == (28, 28, "PNG")
        assert 0 <= summary["brightness_mean"] <= 1 and summary["brightness_std"] > 0
        assert summary["bytes"] == len(chosen[logged.input_index].read_bytes())
        assert len(logged.embedding) > 1 and all(isinstance(v, float) for v in logged.embedding)


def test_embeddings_are_the_model_embeddings(
    logged_client: TestClient, log_url: str, image_bundle: Path, digit_images: list[DigitImage]
) -> None:
    digit = digit_images[7]
    assert logged_client.post("/v1/predict", files=[upload("d.png", digit.read_bytes())]).is_success
    [logged] = PredictionLog(log_url).read()
    reference = Predictor.from_path(image_bundle)
    expected = reference.run([reference.encode(digit.read_bytes())]).embeddings[0]
    # The server ran the same ONNX Runtime batch of one; the log keeps float16, whose 11
    # significant bits round each value by at most 2**-11 of it.
    assert logged.embedding == pytest.approx(expected.tolist(), rel=2.0**-11, abs=1e-7)


def test_a_valid_client_request_id_is_kept(logged_client: TestClient, log_url: str) -> None:
    response = logged_client.get("/health", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.headers["x-request-id"] == "trace-42.a:b"
    for odd in ("has spaces", "x" * 65, "new\\nline", "ünïcode".encode()):
        response = logged_client.get("/health", headers={"X-Request-ID": odd})  # type: ignore[dict-item]
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_failed_requests_are_not_logged_but_carry_an_id(
    logged_client: TestClient, log_url: str
) -> None:
    response = logged_client.post("/v1/predict", files=[upload("x.png", b"not an image")])
    assert_error(response, 415, "not an image")
    assert response.headers["x-request-id"]
    assert PredictionLog(log_url).read() == []


def test_an_unloggable_prediction_is_not_answered(
    logged_client: TestClient, digit_images: list[DigitImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    prediction_log: PredictionLog = logged_client.app.state.prediction_log  # type: ignore[attr-defined]

    async def broken_write(rows: object, before_commit: object = None) -> None:
        raise PredictionLogError("disk full")

    monkeypatch.setattr(prediction_log, "write", broken_write)
    response = logged_client.post(
        "/v1/predict", files=[upload("d.png", digit_images[0].read_bytes())]
    )
    assert_error(response, 503, "could not be logged")


def test_metrics_count_requests_batches_and_labels(
    logged_client: TestClient, digit_images: list[DigitImage]
) -> None:
    files = [upload(d.path.name, d.read_bytes()) for d in digit_images[:2]]
    answered = logged_client.post("/v1/predict", files=files).json()["predictions"]
    logged_client.post("/v1/predict", files=[upload("x.png", b"text")])
    logged_client.get("/no/such/path")
    response = logged_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    requests = 'mlfactory_http_requests_total{endpoint="/v1/predict",method="POST",status="%s"}'
    assert metric(text, requests % "200") == 1
    assert metric(text, requests % "415") == 1
    unmatched = 'mlfactory_http_requests_total{endpoint="unmatched",method="GET",status="404"}'
    assert metric(text, unmatched) == 1
    latency = (
        'mlfactory_http_request_duration_seconds_count{endpoint="/v1/predict",status_class="%s"}'
    )
    assert metric(text, latency % "2xx") == 1
    assert metric(text, latency % "4xx") == 1
    assert metric(text, "mlfactory_batch_size_sum") == 2
    assert metric(text, "mlfactory_batch_size_count") == 1
    assert metric(text, "mlfactory_queue_depth") == 0
    assert metric(text, "mlfactory_prediction_log_pending") == 0
    labels = [p["label"] for p in answered]
    for label in set(labels):
        assert metric(text, f'mlfactory_predictions_total{{label="{label}"}}') == labels.count(
            label
        )
    info = 'mlfactory_model_info{modality="image",name="digits-serving-test",version="0.0.1"}'
    assert metric(text, info) == 1
    assert set(LABELS) >= set(labels)


def test_metrics_show_the_servers_process(logged_client: TestClient) -> None:
    """prometheus-client's process and platform metrics, as its default registry shows them."""
    text = logged_client.get("/metrics").text
    assert 50e6 < metric(text, "process_resident_memory_bytes") < 8e9  # a model is loaded
    assert metric(text, "process_cpu_seconds_total") > 0
    assert metric(text, "process_open_fds") > 0
    assert re.search(r'^python_info\{.*implementation="CPython".*\} 1\.0$', text, re.MULTILINE)
    assert "python_gc_collections_total" in text


def test_each_app_has_its_own_metrics(image_bundle: Path, log_url: str) -> None:
    first = create_app(image_bundle, ServingSettings(log_url=log_url))
    second = create_app(image_bundle, ServingSettings(log_url=log_url))
    with TestClient(first) as one, TestClient(second) as two:
        one.get("/health")
        health = 'mlfactory_http_requests_total{endpoint="/health",method="GET",status="200"}'
        assert metric(one.get("/metrics").text, health) == 1
        assert health not in two.get("/metrics").text


@pytest.mark.parametrize("modality", ["text", "audio"])
def test_text_and_audio_summaries(tmp_path: Path, log_url: str, modality: str) -> None:
    bundle = tiny_bundle(tmp_path / modality, modality)
    with TestClient(create_app(bundle, ServingSettings(log_url=log_url))) as client:
        if modality == "text":
            response = client.post("/v1/predict", json={"texts": ["oil price", "the ship " * 20]})
        else:
            files = [upload("tone.wav", wav_bytes(seconds=0.3), "audio/wav")]
            response = client.post("/v1/predict", files=files)
        assert response.status_code == 200, response.text
    summaries = [r.input_summary for r in PredictionLog(log_url).read()]
    if modality == "text":
        assert summaries[0] == {"bytes": 9, "chars": 9, "tokens": 4, "truncated": False}
        assert summaries[1]["tokens"] == 12 and summaries[1]["truncated"] is True
    else:
        [summary] = summaries
        assert summary["duration_s"] == 0.3  # 2400 frames / 8000 Hz, rounded: exact
        assert (summary["sample_rate"], summary["channels"]) == (8000, 1)
        assert -100 <= summary["mean_db"] < 20


def test_a_log_write_the_database_refuses_is_a_503_and_counted(
    logged_client: TestClient, log_url: str, digit_images: list[DigitImage]
) -> None:
    errors = "mlfactory_prediction_log_write_errors_total"
    assert metric(scrape(logged_client), errors) == 0
    with sqlite3.connect(log_url.removeprefix("sqlite:///")) as database:
        database.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON predictions "
            "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
        )
    response = logged_client.post(
        "/v1/predict", files=[upload("d.png", digit_images[0].read_bytes())]
    )
    assert_error(response, 503, "could not be logged")
    text = scrape(logged_client)
    assert metric(text, errors) == 1
    assert all(metric(text, f'mlfactory_predictions_total{{label="{x}"}}') == 0 for x in LABELS)


def test_every_series_an_alert_reads_exists_from_the_start(
    image_bundle: Path, tmp_path: Path, log_url: str
) -> None:
    bundle = copy_with_version(image_bundle, tmp_path / "bundle", "0.0.1")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["metrics"] = {"test": {"accuracy": 0.93, "f1_macro": 0.91}}
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with TestClient(create_app(bundle, ServingSettings(log_url=log_url))) as client:
        text = scrape(client)
    assert metric(text, "mlfactory_model_test_accuracy") == pytest.approx(0.93)
    for label in LABELS:  # 0, not "no data": a rate over them is 0 before any traffic
        assert metric(text, f'mlfactory_predictions_total{{label="{label}"}}') == 0
    for event in ("idle_closed", "refused", "head_timeout", "head_too_large"):
        assert metric(text, f'mlfactory_connection_guard_events_total{{event="{event}"}}') == 0
    for result in ("ok", "failed"):
        assert metric(text, f'mlfactory_model_reloads_total{{result="{result}"}}') == 0
    for name in ("mlfactory_ood_inputs_total", "mlfactory_prediction_log_write_errors_total"):
        assert metric(text, name) == 0
    assert metric(text, "mlfactory_prediction_log_lag_seconds") == 0
    # Not checked yet: NaN, never a 0 that an alert would compare with.
    for name in (
        "mlfactory_drift_detected",
        "mlfactory_accuracy_estimated_upper",
        "mlfactory_confidence_mean",
    ):
        assert math.isnan(metric(text, name))


def test_a_bundle_without_a_test_accuracy_shows_nan(logged_client: TestClient) -> None:
    # The fixture bundle's bundle.json has no `metrics.test` section.
    assert math.isnan(metric(scrape(logged_client), "mlfactory_model_test_accuracy"))


class ContractReport:
    """A report given as its JSON contract (what `DriftReport.to_json()` returns)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return self.data


def test_the_monitoring_gauges_show_the_latest_report(logged_client: TestClient) -> None:
    metrics: ServingMetrics = logged_client.app.state.metrics  # type: ignore[attr-defined]
    accuracy: dict[str, Any] = {
        "estimated": 0.62,
        "estimated_ci": [0.55, 0.69],
        "mean_confidence": 0.71,
        "reference_confidence": 0.96,
        "labelled": 0,
        "live": None,
    }
    report = {
        "model": {"name": "digits-serving-test", "version": "0.0.1"},
        "window": {"from": None, "to": None, "n": 200},
        "drift": True,
        "level": 0.01,
        "checks": [
            {
                "name": "brightness_mean",
                "kind": "feature",
                "statistic": 0.4,
                "p_value": 0.001,
                "drift": True,
            },
            {
                "name": "embedding",
                "kind": "embedding",
                "statistic": None,
                "p_value": None,
                "drift": False,
            },
        ],
        "ood": {"fraction": 0.35, "threshold": 1.7, "expected": 0.01},
        "accuracy": accuracy,
    }
    metrics.observe_report(ContractReport(report))
    metrics.count_ood(3)
    text = scrape(logged_client)
    assert metric(text, "mlfactory_drift_detected") == 1
    assert metric(text, "mlfactory_drift_level") == pytest.approx(0.01)
    check = '{check="brightness_mean",kind="feature"}'
    assert metric(text, f"mlfactory_drift_check_detected{check}") == 1
    assert metric(text, f"mlfactory_drift_p_value{check}") == pytest.approx(0.001)
    untested = '{check="embedding",kind="embedding"}'
    assert metric(text, f"mlfactory_drift_check_detected{untested}") == 0
    assert math.isnan(metric(text, f"mlfactory_drift_p_value{untested}"))
    assert metric(text, "mlfactory_ood_fraction") == pytest.approx(0.35)
    assert metric(text, "mlfactory_ood_expected_fraction") == pytest.approx(0.01)
    assert metric(text, "mlfactory_ood_inputs_total") == 3
    assert metric(text, "mlfactory_accuracy_estimated") == pytest.approx(0.62)
    assert metric(text, "mlfactory_accuracy_estimated_lower") == pytest.approx(0.55)
    assert metric(text, "mlfactory_accuracy_estimated_upper") == pytest.approx(0.69)
    assert metric(text, "mlfactory_confidence_mean") == pytest.approx(0.71)
    assert metric(text, "mlfactory_confidence_reference_mean") == pytest.approx(0.96)
    assert math.isnan(metric(text, "mlfactory_accuracy_live"))
    assert metric(text, "mlfactory_feedback_labelled") == 0
    # A report without the confidences (a profile that predates them): NaN, not a stale value.
    del accuracy["reference_confidence"]
    metrics.observe_report(ContractReport(report))
    assert math.isnan(metric(scrape(logged_client), "mlfactory_confidence_reference_mean"))
    assert metric(text, "mlfactory_monitoring_window_predictions") == 200
    checked = metric(text, "mlfactory_monitoring_last_check_timestamp_seconds")
    assert abs(checked - time.time()) < 60


def test_every_row_names_the_bundle_that_made_it(tmp_path: Path, log_url: str) -> None:
    """Name, version, MLflow run and data fingerprint: a logged prediction traces to its bundle."""
    folder = tiny_bundle(tmp_path / "bundle", "image", version="7")
    bundle = load_bundle(folder)
    bundle.meta.mlflow_run_id = "3f9c2d0e8b7a4c1d9e6f5a4b3c2d1e0f"
    bundle.meta.data_fingerprint = "1ef4aacdd47332bd"
    bundle.save_meta()
    image = Image.new("RGB", (20, 20), (200, 30, 30))
    with TestClient(create_app(folder, ServingSettings(log_url=log_url))) as client:
        files = [upload(f"{i}.png", png_bytes(image)) for i in range(2)]
        assert client.post("/v1/predict", files=files).status_code == 200
    rows = PredictionLog(log_url).read()
    assert len(rows) == 2
    for logged in rows:
        assert (logged.model_name, logged.model_version) == ("tiny-image", "7")
        assert logged.model_run_id == "3f9c2d0e8b7a4c1d9e6f5a4b3c2d1e0f"
        assert logged.data_fingerprint == "1ef4aacdd47332bd"
