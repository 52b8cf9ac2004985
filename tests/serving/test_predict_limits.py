"""`MLFACTORY_MAX_CONCURRENT_DECODES`: concurrent requests of large images decode at most that
many at once (`predict.DecodeGate`), and every one of them is still answered; `/metrics` shows
the requests decoding and those waiting for a slot.

The app runs with its real request thread pool and model; the gate's own counter of requests
decoding at once is read from the app.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from mlfactory.serving.app import create_app
from mlfactory.serving.predict import DecodeGate
from mlfactory.serving.settings import ServingSettings

from .conftest import png_bytes, upload

MAX_DECODES = 2
REQUESTS = 6
# 9 megapixels of RGBA: about 30 KB of PNG, and tens of milliseconds and ~80 MiB to decode.
SIDE = 3000


def test_concurrent_large_images_decode_at_most_the_limit_at_once(image_bundle: Path) -> None:
    large = png_bytes(Image.new("RGBA", (SIDE, SIDE), (200, 30, 30, 128)))
    settings = ServingSettings(max_concurrent_decodes=MAX_DECODES)
    with TestClient(create_app(image_bundle, settings)) as client:

        def post(index: int) -> int:
            files = [upload(f"large-{index}.png", large)]
            return client.post("/v1/predict", files=files).status_code

        with ThreadPoolExecutor(REQUESTS) as pool:
            statuses = list(pool.map(post, range(REQUESTS)))
        gate: DecodeGate = client.app.state.decode_gate  # type: ignore[attr-defined]
    assert statuses == [200] * REQUESTS
    assert gate.peak == MAX_DECODES  # reached, never passed
    assert gate.in_flight == 0


def decode_gauges(exposition: str) -> tuple[float, float]:
    """(`mlfactory_decodes_in_progress`, `mlfactory_decodes_waiting`) of a `/metrics` text."""
    values = []
    for name in ("mlfactory_decodes_in_progress", "mlfactory_decodes_waiting"):
        match = re.search(rf"^{name} (\S+)$", exposition, re.MULTILINE)
        assert match, f"{name} not in /metrics"
        values.append(float(match.group(1)))
    return values[0], values[1]


def test_metrics_show_the_requests_decoding_and_those_waiting_for_a_slot(
    image_bundle: Path,
) -> None:
    large = png_bytes(Image.new("RGBA", (SIDE, SIDE), (30, 200, 30, 128)))
    with TestClient(create_app(image_bundle, ServingSettings(max_concurrent_decodes=1))) as client:
        assert decode_gauges(client.get("/metrics").text) == (0.0, 0.0)
        seen: list[tuple[float, float]] = []
        done = threading.Event()

        def scrape_until_done() -> None:
            while not done.is_set():
                seen.append(decode_gauges(client.get("/metrics").text))

        def post(index: int) -> int:
            files = [upload(f"large-{index}.png", large)]
            return client.post("/v1/predict", files=files).status_code

        scraper = threading.Thread(target=scrape_until_done)
        scraper.start()
        try:
            with ThreadPoolExecutor(REQUESTS) as pool:
                statuses = list(pool.map(post, range(REQUESTS)))
        finally:
            done.set()
            scraper.join()
        after = decode_gauges(client.get("/metrics").text)
        gate: DecodeGate = client.app.state.decode_gate  # type: ignore[attr-defined]
    assert statuses == [200] * REQUESTS
    assert max(decoding for decoding, _ in seen) == 1  # one slot: never more
    assert 1 <= max(waiting for _, waiting in seen) <= REQUESTS - 1, seen
    assert after == (0.0, 0.0) and (gate.in_flight, gate.waiting) == (0, 0)


def test_the_limit_is_a_setting_of_at_least_one() -> None:
    assert ServingSettings.from_env({}).max_concurrent_decodes == 4
    assert (
        ServingSettings.from_env({"MLFACTORY_MAX_CONCURRENT_DECODES": "1"}).max_concurrent_decodes
        == 1
    )
