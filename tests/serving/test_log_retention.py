"""Retention of the prediction log: old predictions and labels go, recent ones stay, in batches,
whether pruned directly or by a server started with MLFACTORY_LOG_RETENTION."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, Table, func, select, update

from mlfactory.serving import log_retention
from mlfactory.serving.app import create_app
from mlfactory.serving.log_retention import prune_interval, prune_log
from mlfactory.serving.log_tables import chosen_request_ids, feedback, predictions
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.settings import ServingSettings

from .conftest import DigitImage, upload


@pytest.fixture
def open_log() -> Iterator[Callable[[str], Engine]]:
    """Opens prediction logs by URL (as the server does) and releases them after the test."""
    engines: list[Engine] = []

    def open_engine(url: str) -> Engine:
        engines.append(PredictionLog(url).engine)
        return engines[-1]

    yield open_engine
    for engine in engines:
        engine.dispose()


def serve_and_label(image_bundle: Path, log_url: str, images: list[DigitImage]) -> list[str]:
    """Predict each real digit in its own request, under an id of the client's choosing, and
    send its true label; the request ids."""
    request_ids = []
    with TestClient(create_app(image_bundle, ServingSettings(log_url=log_url))) as client:
        for index, image in enumerate(images):
            files = [upload("d.png", image.read_bytes())]
            headers = {"X-Request-ID": f"digit-{index}"}
            response = client.post("/v1/predict", files=files, headers=headers)
            assert response.status_code == 200, response.text
            request_ids.append(response.json()["request_id"])
        labels = [
            {"request_id": request_id, "label": image.label}
            for request_id, image in zip(request_ids, images, strict=True)
        ]
        assert client.post("/v1/feedback", json=labels).json() == {"stored": len(images)}
    return request_ids


def backdate(engine: Engine, request_ids: list[str], days: float) -> None:
    """Move these requests' predictions, labels and chosen ids `days` into the past."""
    then = datetime.now(UTC) - timedelta(days=days)
    with engine.begin() as connection:
        for table in (predictions, feedback, chosen_request_ids):
            connection.execute(
                update(table).where(table.c.request_id.in_(request_ids)).values(ts=then)
            )


def request_ids_in(engine: Engine, table: Table) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(table.c.request_id)).scalars())


def test_prune_deletes_what_is_older_than_the_period_in_batches(
    image_bundle: Path,
    digit_images: list[DigitImage],
    any_log_url: str,
    monkeypatch: pytest.MonkeyPatch,
    open_log: Callable[[str], Engine],
) -> None:
    request_ids = serve_and_label(image_bundle, any_log_url, digit_images[:12])
    old, recent = request_ids[:7], request_ids[7:]
    engine = open_log(any_log_url)
    backdate(engine, old, days=10)
    monkeypatch.setattr(log_retention, "BATCH_ROWS", 3)  # 7 rows: batches of 3, 3 and 1

    assert prune_log(engine, timedelta(days=7)) == 7
    assert request_ids_in(engine, predictions) == set(recent)
    assert request_ids_in(engine, feedback) == set(recent)
    assert request_ids_in(engine, chosen_request_ids) == set(recent)
    assert prune_log(engine, timedelta(days=7)) == 0  # nothing left to delete
    # Counting back from 3 days later, the recent ones are old enough too.
    later = datetime.now(UTC) + timedelta(days=3)
    assert prune_log(engine, timedelta(days=2), now=later) == 5
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(predictions)).scalar() == 0
    assert request_ids_in(engine, chosen_request_ids) == set()


def test_a_server_with_a_retention_period_prunes_its_log_when_it_starts(
    image_bundle: Path,
    digit_images: list[DigitImage],
    log_url: str,
    open_log: Callable[[str], Engine],
) -> None:
    request_ids = serve_and_label(image_bundle, log_url, digit_images[:6])
    engine = open_log(log_url)
    backdate(engine, request_ids[:4], days=40)
    settings = ServingSettings(log_url=log_url, log_retention="30d")
    with TestClient(create_app(image_bundle, settings)) as client:
        deadline = time.monotonic() + 30
        while request_ids_in(engine, predictions) != set(request_ids[4:]):
            assert time.monotonic() < deadline, "the old predictions are still in the log"
            time.sleep(0.2)
        metrics = client.get("/metrics").text
        assert "mlfactory_prediction_log_pruned_total 4.0" in metrics.splitlines()
    assert request_ids_in(engine, feedback) == set(request_ids[4:])


def test_the_prune_interval_is_a_quarter_of_the_period_at_most_an_hour() -> None:
    assert prune_interval(timedelta(minutes=20)) == timedelta(minutes=5)
    assert prune_interval(timedelta(days=30)) == timedelta(hours=1)
