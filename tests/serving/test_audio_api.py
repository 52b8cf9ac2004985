"""`POST /v1/predict` on an audio bundle: real clips, silence, long and bad uploads.

The bundle is a real export of the `birdcalls` network (untrained: these tests are about the
HTTP contract, not accuracy). The client re-raises server exceptions, so a bad upload that
reached a 500 fails the test.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from mlfactory.config.loader import load_recipe
from mlfactory.data.dataset import Item, content_key
from mlfactory.modalities.audio import MAX_SECONDS
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.numerics import sum_to_one_tolerance

from .test_bad_inputs import assert_error

FIXTURES = Path(__file__).parents[1] / "fixtures"
CLIPS = sorted((FIXTURES / "sonic-pi" / "samples").glob("*.flac"))
BIRD = FIXTURES / "tuxpaint/stamps/animals/birds/quetzal.ogg"
LABELS = ["bd", "elec", "tabla"]


def audio_bytes(samples: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def audio_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported (untrained) birdcalls network on the sonic-pi clip labels."""
    from tests.training_path import untrained_bundle

    items = [
        Item(key=content_key(c.read_bytes()), label=c.stem.split("_")[0], split="test", path=str(c))
        for c in CLIPS
    ]
    out = tmp_path_factory.mktemp("audio-bundle")
    return untrained_bundle(load_recipe("birdcalls"), LABELS, items, out, "birdcalls-api-test").path


@pytest.fixture(scope="module")
def client(audio_bundle: Path) -> Iterator[TestClient]:
    app = create_app(audio_bundle, ServingSettings())
    with TestClient(app, raise_server_exceptions=True) as started:
        yield started


def post(client: TestClient, *files: tuple[str, bytes]) -> Any:
    return client.post("/v1/predict", files=[("files", (name, data)) for name, data in files])


def probabilities_ok(prediction: dict[str, Any]) -> bool:
    values = prediction["probabilities"]
    assert isinstance(values, dict) and sorted(values) == LABELS
    return abs(sum(values.values()) - 1.0) <= sum_to_one_tolerance(len(LABELS))


def test_real_clips_of_several_formats_are_classified_in_order(client: TestClient) -> None:
    response = post(client, (CLIPS[0].name, CLIPS[0].read_bytes()), (BIRD.name, BIRD.read_bytes()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "birdcalls-api-test"
    assert len(body["predictions"]) == 2
    assert all(probabilities_ok(p) for p in body["predictions"])
    info = client.get("/v1/model").json()
    assert info["modality"] == "audio" and info["labels"] == LABELS


def test_silence_is_a_valid_input(client: TestClient) -> None:
    silence = audio_bytes(np.zeros(16000, dtype=np.int16), 16000)
    response = post(client, ("silence.wav", silence))
    assert response.status_code == 200, response.text
    assert probabilities_ok(response.json()["predictions"][0])


def test_random_bytes_are_415(client: TestClient) -> None:
    noise = np.random.default_rng(7).bytes(20_000)
    assert_error(post(client, ("call.mp3", noise)), 415, "file 0 ('call.mp3')", "not audio")


def test_truncated_real_files_are_422(client: TestClient) -> None:
    bird, kick = BIRD.read_bytes(), CLIPS[1].read_bytes()
    good = (CLIPS[0].name, CLIPS[0].read_bytes())
    response = post(client, good, ("quetzal.ogg", bird[: len(bird) // 2]))
    assert_error(response, 422, "file 1 ('quetzal.ogg')", "truncated")
    assert_error(post(client, ("kick.flac", kick[: len(kick) // 2])), 422, "corrupt or truncated")


def test_empty_and_zero_length_files_are_422(client: TestClient) -> None:
    assert_error(post(client, ("empty.wav", b"")), 422, "empty")
    zero = audio_bytes(np.zeros(0, dtype=np.int16), 16000)
    assert_error(post(client, ("zero.wav", zero)), 422, "no audio")


def test_a_ten_minute_recording_is_cropped_and_a_longer_one_refused(client: TestClient) -> None:
    rate = 8000  # silent FLAC: ten minutes in ~14 kB, well under the upload limit
    ten_minutes = audio_bytes(np.zeros(int(MAX_SECONDS) * rate, np.int16), rate, "FLAC")
    response = post(client, ("ten-minutes.flac", ten_minutes))
    assert response.status_code == 200, response.text

    eleven = audio_bytes(np.zeros((int(MAX_SECONDS) + 60) * rate, np.int16), rate, "FLAC")
    detail = assert_error(post(client, ("eleven.flac", eleven)), 413, "file 0 ('eleven.flac')")
    assert "660 s exceeds the limit of 600 s" in detail
