"""Monitoring in the server, on a real trained digits bundle with its export-time profile:
OOD scores in responses, the log and /metrics; the drift and history endpoints."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from sqlalchemy import select, update

from mlfactory.monitoring.log_window import read_window
from mlfactory.monitoring.notes import SPLITS_DISAGREE_NOTE
from mlfactory.monitoring.profile import ARRAYS_FILE, load_profile
from mlfactory.monitoring.report import check_window
from mlfactory.predictor import Predictor
from mlfactory.serving import monitoring
from mlfactory.serving.app import create_app
from mlfactory.serving.log_tables import predictions
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.settings import ServingSettings
from tests.monitoring.conftest import STAMPS, copy_with_another_profile, digit_images, png

from .conftest import upload
from .live_server import live_server
from .tiny_bundles import copy_with_version

HISTORY_KEYS = {
    "from",
    "to",
    "n",
    "ood_fraction",
    "accuracy_estimated",
    "accuracy_estimated_ci",
    "accuracy_live",
    "labelled",
    "drift",
    "p_values",
    "latency_p50_ms",
    "latency_p95_ms",
    "requests",
}


@pytest.fixture(scope="module")
def unseen_digits() -> list[tuple[Image.Image, str]]:
    """100 real digits that neither training nor the profile saw (10 a class)."""
    return digit_images(offset=300, per_class=10)


@pytest.fixture
def monitored_client(monitored_digits: Any, log_url: str) -> Iterator[TestClient]:
    app = create_app(monitored_digits.bundle.path, ServingSettings(log_url=log_url))
    with TestClient(app) as client:
        yield client


def post_images(client: TestClient, images: list[Image.Image]) -> list[dict[str, Any]]:
    """Predict `images` in requests of 10; the predictions, in order."""
    predictions = []
    for start in range(0, len(images), 10):
        files = [upload(f"{i}.png", png(image)) for i, image in enumerate(images[start:][:10])]
        response = client.post("/v1/predict", files=files)
        assert response.status_code == 200, response.text
        predictions += response.json()["predictions"]
    return predictions


def ood_total(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("mlfactory_ood_inputs_total"):
            return float(line.split()[-1])
    raise AssertionError("mlfactory_ood_inputs_total is not in /metrics")


def test_each_prediction_has_an_ood_score_in_the_response_the_log_and_metrics(
    monitored_client: TestClient,
    monitored_digits: Any,
    unseen_digits: list[tuple[Image.Image, str]],
    log_url: str,
) -> None:
    profile = json.loads((monitored_digits.bundle.path / "profile.json").read_text())
    threshold = profile["ood"]["threshold"]
    digits = post_images(monitored_client, [image for image, _ in unseen_digits[::2]])
    photos = sorted(p for p in STAMPS.rglob("*.png") if not p.stem.endswith("_mirror"))
    foreign = post_images(monitored_client, [Image.open(p) for p in photos])
    answered = digits + foreign
    for prediction in answered:
        assert isinstance(prediction["ood_score"], float)
        assert prediction["in_distribution"] is (prediction["ood_score"] <= threshold)

    def flagged(predictions: list[dict[str, Any]]) -> float:
        return sum(not p["in_distribution"] for p in predictions) / len(predictions)

    assert flagged(digits) <= 0.1  # calibrated to 1 % on validation digits
    assert flagged(foreign) > flagged(digits)
    assert ood_total(monitored_client) == sum(not p["in_distribution"] for p in answered)
    logged = PredictionLog(log_url).read()
    assert [r.ood_score for r in logged] == [p["ood_score"] for p in answered]
    assert [r.in_distribution for r in logged] == [p["in_distribution"] for p in answered]


def test_drift_endpoint_is_quiet_on_unseen_digits_and_loud_on_inverted_ones(
    monitored_client: TestClient, unseen_digits: list[tuple[Image.Image, str]]
) -> None:
    post_images(monitored_client, [image for image, _ in unseen_digits])
    quiet = monitored_client.get("/v1/monitoring/drift", params={"last": 100})
    assert quiet.status_code == 200, quiet.text
    report = quiet.json()
    assert report["model"]["name"] == "digits" and report["window"]["n"] == 100
    assert report["drift"] is False
    assert {"fraction", "threshold"} <= set(report["ood"])
    assert {"estimated", "estimated_ci", "labelled", "live"} <= set(report["accuracy"])
    kinds = {check["kind"] for check in report["checks"]}
    assert kinds == {"feature", "label", "confidence", "embedding"}
    shares = [row["window_share"] for row in report["labels"]]
    assert [row["label"] for row in report["labels"]] == [str(digit) for digit in range(10)]
    assert sum(shares) == pytest.approx(1.0)
    # No note on held-out digits, but the one on the reference, which a model whose validation
    # and test splits happen to disagree carries in every report.
    assert [n for n in report["notes"] if not n.startswith(SPLITS_DISAGREE_NOTE)] == []

    post_images(monitored_client, [ImageOps.invert(image) for image, _ in unseen_digits])
    loud = monitored_client.get("/v1/monitoring/drift", params={"last": 100}).json()
    assert loud["drift"] is True and loud["window"]["n"] == 100

    buckets = monitored_client.get(
        "/v1/monitoring/history", params={"last": 200, "buckets": 4}
    ).json()["buckets"]
    assert len(buckets) == 4 and all(set(b) == HISTORY_KEYS for b in buckets)
    assert sum(b["n"] for b in buckets) == 200
    assert sum(b["requests"] for b in buckets) == 20
    assert [b["from"] for b in buckets] == sorted(b["from"] for b in buckets)
    assert buckets[-1]["ood_fraction"] >= buckets[0]["ood_fraction"]


def test_query_limits_are_422_with_a_detail(monitored_client: TestClient) -> None:
    for path, params in (
        ("/v1/monitoring/drift", {"last": 0}),
        ("/v1/monitoring/history", {"buckets": 1000}),
        ("/v1/monitoring/drift", {"since": "yesterday"}),
        ("/v1/monitoring/drift", {"flagged": 1001}),
        ("/v1/monitoring/drift", {"flagged": -1}),
        ("/v1/monitoring/history", {"since": "0h"}),
        ("/v1/monitoring/drift", {"since": "999999999w"}),  # before year 1: not a date
        ("/v1/monitoring/history", {"since": "99999999999999999999s"}),
        ("/v1/monitoring/drift", {"level": 0}),
        ("/v1/monitoring/drift", {"level": 0.0001}),  # thousands of permutations a check
        ("/v1/monitoring/drift", {"level": 1}),
        ("/v1/monitoring/history", {"level": "strict"}),
    ):
        response = monitored_client.get(path, params=params)
        assert response.status_code == 422 and "detail" in response.json()
    for path in ("/v1/monitoring/drift", "/v1/monitoring/history"):  # not "less than 1"
        detail = monitored_client.get(path, params={"level": "nan"}).json()["detail"]
        assert detail == "invalid request: query.level: Input should be a finite number"
    for since in ("1 day", "0m"):  # a zero length is not a window either
        detail = monitored_client.get("/v1/monitoring/drift", params={"since": since}).json()
        assert detail == {
            "detail": f"since '{since}' is not a duration: use a number above 0 and a unit "
            "(s, m, h, d or w), e.g. 30m, 6h, 2d; at most 5218w"
        }


def _embedding_detail(report: dict[str, Any]) -> str:
    return str(next(c["detail"] for c in report["checks"] if c["name"] == "embedding"))


def test_the_level_comes_from_the_query_or_the_server_setting(
    monitored_digits: Any, unseen_digits: list[tuple[Image.Image, str]], log_url: str
) -> None:
    """A strict level is the report's, and sizes its embedding test's permutations."""
    settings = ServingSettings(log_url=log_url, monitor_level=0.01)
    with TestClient(create_app(monitored_digits.bundle.path, settings)) as client:
        post_images(client, [image for image, _ in unseen_digits[:60]])
        default = client.get("/v1/monitoring/drift", params={"last": 60}).json()
        assert default["level"] == 0.01
        assert _embedding_detail(default).startswith("2199 permutations")  # 11 checks
        asked = client.get("/v1/monitoring/drift", params={"last": 60, "level": 0.05}).json()
        assert asked["level"] == 0.05 and _embedding_detail(asked).startswith("500 permutations")
        spans = client.get(
            "/v1/monitoring/history", params={"last": 60, "buckets": 2, "level": 0.2}
        ).json()
        assert spans["level"] == 0.2
        # Two equal time spans: how the 60 predictions fall in them depends on when each
        # request ran (a slow one moves 10 into the other span), not on the level.
        assert [b["n"] > 0 for b in spans["buckets"]] == [True, True]
        assert sum(b["n"] for b in spans["buckets"]) == 60
        default_spans = client.get("/v1/monitoring/history", params={"last": 60}).json()
        assert default_spans["level"] == 0.01  # the server's, as the report's


def test_since_reads_the_predictions_of_a_period(
    monitored_client: TestClient, unseen_digits: list[tuple[Image.Image, str]]
) -> None:
    post_images(monitored_client, [image for image, _ in unseen_digits[:40]])
    engine = monitored_client.app.state.prediction_log.engine  # type: ignore[attr-defined]
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    with engine.begin() as connection:  # the first 15 predictions were made two hours ago
        oldest = select(predictions.c.id).order_by(predictions.c.id).limit(15).scalar_subquery()
        connection.execute(
            update(predictions).where(predictions.c.id.in_(oldest)).values(ts=two_hours_ago)
        )

    def window_n(params: dict[str, Any]) -> int:
        response = monitored_client.get("/v1/monitoring/drift", params=params)
        assert response.status_code == 200, response.text
        return int(response.json()["window"]["n"])

    assert window_n({"since": "1h"}) == 25
    assert window_n({"since": "3h"}) == window_n({}) == 40
    assert window_n({"since": "1h", "last": 10}) == 10
    assert window_n({"last": 10}) == 10
    history = monitored_client.get(
        "/v1/monitoring/history", params={"since": "90m", "buckets": 3}
    ).json()
    assert sum(bucket["n"] for bucket in history["buckets"]) == 25


def test_predictions_another_model_logged_as_this_version_are_left_out(
    monitored_client: TestClient, unseen_digits: list[tuple[Image.Image, str]]
) -> None:
    post_images(monitored_client, [image for image, _ in unseen_digits[:40]])
    engine = monitored_client.app.state.prediction_log.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:  # the first 15 were logged by a retrained namesake
        first = select(predictions.c.id).order_by(predictions.c.id).limit(15).scalar_subquery()
        connection.execute(
            update(predictions).where(predictions.c.id.in_(first)).values(model_run_id="f" * 32)
        )
    report = monitored_client.get("/v1/monitoring/drift").json()
    assert report["window"]["n"] == 25
    assert any("15 predictions logged as digits" in note for note in report["notes"])


def test_a_period_with_more_than_the_window_holds_is_cut_and_says_so(
    monitored_client: TestClient,
    unseen_digits: list[tuple[Image.Image, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlfactory.monitoring import log_window

    monkeypatch.setattr(log_window, "MAX_WINDOW_ROWS", 30)  # not 100,000 rows in a test
    post_images(monitored_client, [image for image, _ in unseen_digits[:40]])
    cut = monitored_client.get("/v1/monitoring/drift", params={"since": "1h"}).json()
    assert cut["window"]["n"] == 30
    assert (
        "the last 1h holds at least 30 predictions: this window is the latest 30 of them, "
        "not the whole period (last=N sets the number)" in cut["notes"]
    )
    whole = monitored_client.get("/v1/monitoring/drift", params={"since": "1h", "last": 40})
    assert whole.json()["window"]["n"] == 40
    assert not any("holds at least" in note for note in whole.json()["notes"])


def test_a_bundle_without_a_profile_serves_and_says_it_has_none(client: TestClient) -> None:
    """The untrained test bundle is exported without a profile."""
    image = Image.new("L", (28, 28), 128)
    prediction = client.post("/v1/predict", files=[upload("g.png", png(image))]).json()
    assert prediction["predictions"][0]["ood_score"] is None
    assert prediction["predictions"][0]["in_distribution"] is None
    for path in ("/v1/monitoring/drift", "/v1/monitoring/history"):
        response = client.get(path)
        assert response.status_code == 404
        assert "has no monitoring profile" in response.json()["detail"]


def test_a_profile_for_another_embedding_width_is_not_used(
    monitored_digits: Any, log_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A self-consistent profile of a 640-wide embedding beside a model whose embedding is 1,280
    # wide (a profile copied from another bundle): scoring would fail every request.
    bundle = Path(shutil.copytree(monitored_digits.bundle.path, tmp_path / "bundle"))
    with np.load(bundle / ARRAYS_FILE, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    arrays["ood.class_means"] = arrays["ood.class_means"][:, :640]
    arrays["ood.basis"] = arrays["ood.basis"][:640]
    with open(bundle / ARRAYS_FILE, "wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)
    app = create_app(bundle, ServingSettings(log_url=log_url))
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        image = Image.new("L", (28, 28), 128)
        response = client.post("/v1/predict", files=[upload("g.png", png(image))])
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["ood_score"] is None
        drift = client.get("/v1/monitoring/drift")
        assert drift.status_code == 404
        assert "profile is for a 640-wide embedding" in drift.json()["detail"]
    assert "profile is for a 640-wide embedding, the model's is 1280 wide" in caplog.text


def test_a_corrupt_profile_is_named_by_the_monitoring_endpoints(
    monitored_digits: Any, log_url: str, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(monitored_digits.bundle.path, tmp_path / "bundle"))
    (bundle / ARRAYS_FILE).write_bytes(b"not an npz")
    with TestClient(create_app(bundle, ServingSettings(log_url=log_url))) as client:
        for path in ("/v1/monitoring/drift", "/v1/monitoring/history"):
            response = client.get(path)
            assert response.status_code == 404
            detail = response.json()["detail"]
            assert "profile.npz is not an npz archive" in detail and "monitors nothing" in detail


def test_a_profile_changed_after_export_is_scored_in_numpy_with_a_warning(
    monitored_digits: Any,
    unseen_digits: list[tuple[Image.Image, str]],
    log_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model's in-graph score is for the exported profile; a replaced one is not ignored."""
    bundle = tmp_path / "bundle"
    profile = copy_with_another_profile(monitored_digits.bundle.path, bundle)
    exported = load_profile(monitored_digits.bundle.path)
    assert exported is not None
    images = [image for image, _ in unseen_digits[:10]]
    predictor = Predictor.from_path(bundle)
    output = predictor.run([predictor.encode(png(image)) for image in images], early_features=True)
    expected = profile.ood.score(output.embeddings, output.early_features)
    app = create_app(bundle, ServingSettings(log_url=log_url))
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        scores = [p["ood_score"] for p in post_images(client, images)]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    before = exported.ood.score(output.embeddings, output.early_features)
    assert np.all(np.abs(before - expected) > 0.1)
    assert "was made for another profile: scoring in numpy instead" in caplog.text


def gauge(text: str, name: str) -> float | None:
    """The value of an unlabelled sample of a /metrics exposition (None: absent)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def wait_for_gauge(
    read: Callable[[], str], name: str, wanted: Callable[[float], bool], timeout_s: float = 90
) -> str:
    """Poll /metrics until gauge `name` holds a wanted value; the last exposition."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = read()
        value = gauge(text, name)
        if value is not None and not math.isnan(value) and wanted(value):
            return text
        assert time.monotonic() < deadline, f"{name} is {value} after {timeout_s} s"
        time.sleep(0.5)


@contextlib.contextmanager
def watched_client(
    bundle: Path, log_url: str, every: str, level: float = 0.05, admin_token: str | None = None
) -> Iterator[tuple[TestClient, Callable[[], str]]]:
    """A started app whose background check runs every `every` predictions over the latest
    100 at `level`, with a function that scrapes its /metrics."""
    settings = ServingSettings(
        log_url=log_url,
        monitor_every=every,
        monitor_window=100,
        monitor_level=level,
        admin_token=admin_token,
    )
    with TestClient(create_app(bundle, settings)) as client:
        yield client, lambda: client.get("/metrics").text


def test_the_background_check_updates_the_gauges_after_shifted_traffic(
    monitored_digits: Any, unseen_digits: list[tuple[Image.Image, str]], log_url: str
) -> None:
    with watched_client(monitored_digits.bundle.path, log_url, every="50") as (client, scrape):
        assert math.isnan(gauge(scrape(), "mlfactory_drift_detected") or 0.0)  # not checked yet
        post_images(client, [image for image, _ in unseen_digits])
        quiet = wait_for_gauge(
            scrape, "mlfactory_monitoring_window_predictions", lambda n: n == 100
        )
        assert gauge(quiet, "mlfactory_drift_detected") == 0.0
        assert 0.0 <= (gauge(quiet, "mlfactory_accuracy_estimated") or -1) <= 1.0
        post_images(client, [ImageOps.invert(image) for image, _ in unseen_digits])
        loud = wait_for_gauge(scrape, "mlfactory_drift_detected", lambda drift: drift == 1.0)
        assert (gauge(loud, "mlfactory_ood_fraction") or 0) > (
            gauge(quiet, "mlfactory_ood_fraction") or 0
        )
        assert client.app.state.drift_watch.checks >= 3  # type: ignore[attr-defined]


def test_a_reload_shows_nothing_of_the_previous_model_until_the_new_one_is_checked(
    monitored_digits: Any,
    unseen_digits: list[tuple[Image.Image, str]],
    log_url: str,
    tmp_path: Path,
) -> None:
    """The gauges were the old model's verdict: after a reload they read NaN (no alert goes on
    firing for a model nobody checked), and a model served without a usable profile keeps them
    NaN. A reload of the same model checks its window again at once, with no new traffic."""
    served = monitored_digits.bundle.path
    token = "test-admin-token"
    auth = {"Authorization": f"Bearer {token}"}
    next_version = copy_with_version(served, tmp_path / "next", "2")
    unprofiled = copy_with_version(served, tmp_path / "unprofiled", "3")
    (unprofiled / ARRAYS_FILE).unlink()
    embedding = 'mlfactory_drift_p_value{check="embedding",kind="embedding"}'

    def reload(client: TestClient, bundle: Path | None) -> None:
        body = {"bundle": str(bundle)} if bundle else None
        response = client.post("/v1/admin/reload", headers=auth, json=body)
        assert response.status_code == 200, response.text

    with watched_client(served, log_url, every="100", admin_token=token) as (client, scrape):
        post_images(client, [ImageOps.invert(image) for image, _ in unseen_digits])
        loud = wait_for_gauge(scrape, "mlfactory_drift_detected", lambda drift: drift == 1.0)
        checked_at = gauge(loud, "mlfactory_monitoring_last_check_timestamp_seconds") or 0.0
        reload(client, None)  # the same model again: checked again without new traffic
        wait_for_gauge(
            scrape, "mlfactory_monitoring_last_check_timestamp_seconds", lambda t: t > checked_at
        )
        assert gauge(scrape(), "mlfactory_drift_detected") == 1.0

        reload(client, next_version)
        text = scrape()
        for name in (
            "mlfactory_drift_detected",
            "mlfactory_ood_fraction",
            "mlfactory_accuracy_estimated",
            "mlfactory_monitoring_window_predictions",
        ):
            assert math.isnan(gauge(text, name) or 0.0), name
        assert gauge(text, embedding) is None  # the previous model's checks are gone
        post_images(client, [image for image, _ in unseen_digits])
        quiet = wait_for_gauge(scrape, "mlfactory_drift_detected", lambda drift: drift == 0.0)
        assert gauge(quiet, "mlfactory_monitoring_window_predictions") == 100
        assert gauge(quiet, embedding) is not None

        reload(client, unprofiled)
        post_images(client, [image for image, _ in unseen_digits[:10]])
        watch = client.app.state.drift_watch  # type: ignore[attr-defined]
        assert client.portal.call(watch.check_now) is False  # type: ignore[union-attr]
        text = scrape()
        assert math.isnan(gauge(text, "mlfactory_drift_detected") or 0.0)
        assert gauge(text, embedding) is None


def test_the_background_check_runs_at_the_servers_level(
    monitored_digits: Any, unseen_digits: list[tuple[Image.Image, str]], log_url: str
) -> None:
    """At MLFACTORY_MONITOR_LEVEL=0.01 the embedding test can still drift: with 500
    permutations its corrected p-value could not go below 8/501 = 0.016."""
    embedding = 'mlfactory_drift_p_value{check="embedding",kind="embedding"}'
    bundle = monitored_digits.bundle.path
    with watched_client(bundle, log_url, every="100", level=0.01) as (client, scrape):
        post_images(client, [ImageOps.invert(image) for image, _ in unseen_digits])
        text = wait_for_gauge(scrape, "mlfactory_drift_detected", lambda drift: drift == 1.0)
        assert (gauge(text, embedding) or 1.0) <= 0.01


def test_feedback_alone_brings_the_live_accuracy_to_the_gauges(
    monitored_digits: Any, unseen_digits: list[tuple[Image.Image, str]], log_url: str
) -> None:
    """Labels that come back after the traffic has stopped still reach /metrics."""
    with watched_client(monitored_digits.bundle.path, log_url, every="20") as (client, scrape):
        answered = []
        for image, label in unseen_digits[::5]:  # 20 digits, 2 a class, one request each
            response = client.post("/v1/predict", files=[upload("d.png", png(image))])
            assert response.status_code == 200, response.text
            answered.append((response.json(), label))
        checked = wait_for_gauge(
            scrape, "mlfactory_monitoring_window_predictions", lambda n: n == 20
        )
        assert gauge(checked, "mlfactory_feedback_labelled") == 0.0
        assert math.isnan(gauge(checked, "mlfactory_accuracy_live") or 0.0)
        labels = [{"request_id": body["request_id"], "label": label} for body, label in answered]
        assert client.post("/v1/feedback", json=labels).json() == {"stored": 20}
        text = wait_for_gauge(scrape, "mlfactory_feedback_labelled", lambda n: n == 20)
        right = sum(body["predictions"][0]["label"] == label for body, label in answered)
        assert gauge(text, "mlfactory_accuracy_live") == pytest.approx(right / 20)
        assert client.app.state.drift_watch.checks == 2  # type: ignore[attr-defined]


def test_checks_of_the_log_run_one_at_a_time(
    monitored_digits: Any,
    unseen_digits: list[tuple[Image.Image, str]],
    log_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drift requests that arrive together are checked in turn, not all at once: a large
    window takes seconds of CPU and hundreds of MB, which must not be taken from the model."""
    running, most = 0, 0
    counting = threading.Lock()
    check_window = monitoring.check_window

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        with counting:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.3)  # long enough for the other requests to arrive meanwhile
            return check_window(*args, **kwargs)
        finally:
            with counting:
                running -= 1

    monkeypatch.setattr(monitoring, "check_window", counted)
    settings = ServingSettings(log_url=log_url, monitor_every="0")
    with TestClient(create_app(monitored_digits.bundle.path, settings)) as client:
        post_images(client, [image for image, _ in unseen_digits[:40]])
        with ThreadPoolExecutor(4) as pool:
            responses = list(
                pool.map(
                    lambda _: client.get("/v1/monitoring/drift", params={"last": 40}), range(4)
                )
            )
    assert [response.status_code for response in responses] == [200] * 4
    assert all(response.json()["window"]["n"] == 40 for response in responses)
    assert most == 1


def test_two_workers_share_the_log_feedback_and_gauges(
    monitored_digits: Any, unseen_digits: list[tuple[Image.Image, str]], tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    bundle = monitored_digits.bundle.path
    with live_server(
        bundle,
        tmp_path,
        "--workers",
        "2",
        monitor_every="10",
        monitor_window="100",
        log_url=log_url,
    ) as server:
        answered = []
        for image, label in unseen_digits[:40]:  # a new connection each: either worker answers
            files = [upload("d.png", png(image))]
            response = httpx.post(f"{server.url}/v1/predict", files=files, timeout=30.0)
            assert response.status_code == 200, response.text
            answered.append((response.json(), label))
        labels = [{"request_id": body["request_id"], "label": label} for body, label in answered]
        stored = httpx.post(f"{server.url}/v1/feedback", json=labels, timeout=30.0)
        assert stored.json() == {"stored": 40}

        def scrape() -> str:
            return httpx.get(f"{server.url}/metrics", timeout=10.0).text

        text = wait_for_gauge(scrape, "mlfactory_monitoring_window_predictions", lambda n: n > 0)
        flagged = sum(not body["predictions"][0]["in_distribution"] for body, _ in answered)
        assert gauge(text, "mlfactory_ood_inputs_total") == flagged
        report = httpx.get(f"{server.url}/v1/monitoring/drift", timeout=60.0).json()
        assert report["window"]["n"] == 40 and report["accuracy"]["labelled"] == 40
        right = sum(body["predictions"][0]["label"] == label for body, label in answered)
        assert report["accuracy"]["live"] == pytest.approx(right / 40)


def test_scores_logged_under_another_profile_are_left_out_of_its_checks(
    monitored_digits: Any,
    unseen_digits: list[tuple[Image.Image, str]],
    log_url: str,
    tmp_path: Path,
) -> None:
    """The same bundle served with its exported profile, then with another (as after
    `mlfactory profile`): each row records the scorer that scored it, and a check reads only the
    scores of its own profile's scorer (this model's score needs the early features, which the
    log does not keep, so the others cannot be scored again)."""
    exported = load_profile(monitored_digits.bundle.path)
    replaced = copy_with_another_profile(monitored_digits.bundle.path, tmp_path / "bundle")
    assert exported is not None and exported.ood.reads_early_features
    images = [image for image, _ in unseen_digits[:80]]
    served = ((monitored_digits.bundle.path, images[:40]), (tmp_path / "bundle", images[40:]))
    for bundle, part in served:
        with TestClient(create_app(bundle, ServingSettings(log_url=log_url))) as client:
            post_images(client, part)
    rows = PredictionLog(log_url).read()
    assert [r.ood_scorer for r in rows] == [exported.ood.fingerprint()] * 40 + [
        replaced.ood.fingerprint()
    ] * 40
    meta = monitored_digits.bundle.meta
    window = read_window(log_url, meta.name, meta.version, labels=meta.labels)
    model = {"name": meta.name, "version": meta.version}
    for profile, scored in ((exported, rows[:40]), (replaced, rows[40:])):
        report = check_window(profile, window, model)
        checks = {check.name: check for check in report.checks}
        assert checks["ood_score"].n_window == checks["ood_fraction"].n_window == 40
        assert checks["ood_fraction"].detail.startswith("40 of 80 logged scores left out")
        scores = np.array([row.ood_score for row in scored])
        assert report.ood_fraction == np.mean(scores > profile.ood.threshold)


def failures(text: str, reason: str) -> float:
    """`mlfactory_monitoring_check_failures_total` of `reason` in a /metrics exposition."""
    name = "mlfactory_monitoring_check_failures_total"
    match = re.search(rf'^{name}{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    assert match, f"no {name} for {reason}"
    return float(match.group(1))


def test_failed_background_checks_are_counted_and_the_checks_go_on(
    monitored_digits: Any,
    unseen_digits: list[tuple[Image.Image, str]],
    log_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlfactory.serving import drift_watch
    from mlfactory.serving.prediction_log import LoggedPrediction

    images = [image for image, _ in unseen_digits]
    with watched_client(monitored_digits.bundle.path, log_url, every="10") as (client, scrape):
        assert failures(scrape(), "log") == failures(scrape(), "error") == 0.0

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug in a check")

        monkeypatch.setattr(drift_watch, "check_window", broken)
        post_images(client, images[:10])
        deadline = time.monotonic() + 60
        while failures(scrape(), "error") < 1:
            assert time.monotonic() < deadline, "the failed check was not counted"
            time.sleep(0.2)
        monkeypatch.undo()
        post_images(client, images[10:20])  # the watch lives on: the next check runs
        wait_for_gauge(scrape, "mlfactory_monitoring_window_predictions", lambda n: n == 20)

        # another model logged a row under this name and version: the window cannot be read
        meta = monitored_digits.bundle.meta
        other = PredictionLog(log_url)
        other.start()
        share = 1 / len(meta.labels)
        foreign = LoggedPrediction(
            request_id="foreign",
            input_index=0,
            model_name=meta.name,
            model_version=meta.version,
            input_summary={"bytes": 1},
            embedding=[0.5] * 8,
            probabilities=dict.fromkeys(meta.labels, share),
            label=meta.labels[0],
            score=share,
            latency_ms=1.0,
        )
        other.submit([foreign]).result(timeout=10)
        other.close()
        post_images(client, images[20:30])
        deadline = time.monotonic() + 60
        while failures(scrape(), "log") < 1:
            assert time.monotonic() < deadline, "the unreadable window was not counted"
            time.sleep(0.2)
        assert failures(scrape(), "error") == 1.0
        assert client.app.state.drift_watch.checks == 1  # type: ignore[attr-defined]


def test_the_report_names_the_most_out_of_distribution_inputs_by_request(
    monitored_client: TestClient, unseen_digits: list[tuple[Image.Image, str]]
) -> None:
    """Digits and photos sent under the client's request ids: the report lists the flagged
    inputs by request id and position, highest score first, and feedback sent with that pair
    shows beside them."""
    photos = sorted(p for p in STAMPS.rglob("*.png") if not p.stem.endswith("_mirror"))
    requests = {
        f"digits-{k}": [image for image, _ in unseen_digits[k * 10 : (k + 1) * 10]]
        for k in range(5)
    } | {"photos": [Image.open(p) for p in photos]}
    answered = {}
    for request_id, images in requests.items():
        files = [upload(f"{i}.png", png(image)) for i, image in enumerate(images)]
        response = monitored_client.post(
            "/v1/predict", files=files, headers={"X-Request-ID": request_id}
        )
        assert response.status_code == 200, response.text
        for index, prediction in enumerate(response.json()["predictions"]):
            answered[(request_id, index)] = prediction
    out = [key for key, p in answered.items() if not p["in_distribution"]]
    assert any(request_id == "photos" for request_id, _ in out)  # real foreign photos flagged
    expected = sorted(out, key=lambda key: -answered[key]["ood_score"])[:10]

    report = monitored_client.get("/v1/monitoring/drift", params={"last": 100}).json()
    flagged = report["ood"]["flagged"]
    assert [(item["request_id"], item["input_index"]) for item in flagged] == expected
    fewer = monitored_client.get("/v1/monitoring/drift", params={"last": 100, "flagged": 2})
    assert fewer.json()["ood"]["flagged"] == flagged[:2]
    for item in flagged:
        prediction = answered[(item["request_id"], item["input_index"])]
        assert item["ood_score"] == prediction["ood_score"]
        assert (item["label"], item["confidence"]) == (prediction["label"], prediction["score"])
        assert item["true_label"] is None and item["time"] is not None

    top = flagged[0]
    sent = {"request_id": top["request_id"], "input_index": top["input_index"], "label": "3"}
    assert monitored_client.post("/v1/feedback", json=sent).status_code == 200
    again = monitored_client.get("/v1/monitoring/drift", params={"last": 100}).json()
    assert again["ood"]["flagged"][0]["true_label"] == "3"
    assert [item["true_label"] for item in again["ood"]["flagged"][1:]] == [None] * (
        len(flagged) - 1
    )
