"""Bad inputs of every modality, and schemathesis against the served OpenAPI schema.

The corpus: for image, text and audio bundles, malformed bodies, wrong media, truncated, empty,
oversized and poisoned inputs each get their documented 4xx with a one-line `detail`; the
client re-raises anything that reaches the catch-all handler, so a 500 fails the test. Nothing
refused is logged, and the server still answers a good request afterwards.

Schemathesis then generates requests from each server's own `/openapi.json` (valid and invalid
ones, a bounded number per operation) against a real server process: no response may be a 5xx,
and every response must match the schema (status codes, content types, bodies, headers).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image

from mlfactory.serving.app import create_app
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.settings import ServingSettings
from tests.hostile_files import EPS, bomb_png, stripe_png

from .conftest import DigitImage, png_bytes
from .live_server import live_server
from .test_bad_inputs import assert_error
from .tiny_bundles import tiny_bundle, wav_bytes

MAX_FILES = 3
# Generated requests per operation and mode: the predictions, and everything else.
MAX_EXAMPLES = {"POST /v1/predict": 50}
OTHER_EXAMPLES = 10
UNTERMINATED = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n\r\nab'


def flac_silence(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * rate), dtype=np.int16), rate, format="FLAC")
    return buffer.getvalue()


def float_wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), 8000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def nan_wav() -> bytes:
    return float_wav(np.array([0.1, np.nan, -0.1] * 1000))


def files(*parts: tuple[str, bytes]) -> dict[str, Any]:
    return {"files": [("files", (name, data, "application/octet-stream")) for name, data in parts]}


def multipart_corpus(
    good: bytes, cut: bytes, other: bytes, kind: str
) -> list[tuple[str, dict[str, Any], int]]:
    """Bad requests every file modality must refuse: (case, httpx arguments, status)."""
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    boundary = {"content-type": "multipart/form-data; boundary=x"}
    return [
        ("empty file", files(("e.bin", b"")), 422),
        ("random bytes", files(("noise.bin", noise)), 415),
        ("a text file", files(("notes.txt", b"shopping list: eggs\n")), 415),
        ("another modality's file", files(("other.bin", other)), 415),
        ("good then truncated", files(("ok", good), ("cut", cut)), 422),
        ("too many files", files(*[(f"{i}", good) for i in range(MAX_FILES + 1)]), 413),
        ("no body", {}, 422),
        ("wrong field name", {"files": [("file", ("a", good, kind))]}, 422),
        ("a JSON body", {"json": {"texts": ["hello"]}}, 415),
        ("raw bytes, no multipart", {"content": good, "headers": {"content-type": kind}}, 415),
        (
            "no boundary",
            {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
            422,
        ),
        ("garbage multipart", {"content": b"garbage", "headers": boundary}, 422),
        ("unterminated", {"content": UNTERMINATED, "headers": boundary}, 422),
    ]


def corpus(modality: str, digit: bytes) -> list[tuple[str, dict[str, Any], int]]:
    if modality == "image":
        return [
            *multipart_corpus(digit, digit[: len(digit) // 2], wav_bytes(), "image/png"),
            ("decompression bomb", files(("bomb.png", bomb_png(20_000, 20_000))), 413),
            ("too many pixels", files(("big.png", bomb_png(7_000, 7_000))), 413),
            ("a strip of pixels", files(("strip.png", stripe_png(3000))), 422),
            ("EPS, which Ghostscript would run", files(("a.eps", EPS)), 415),
        ]
    if modality == "audio":
        return [
            # libsndfile decodes what a cut-off WAV still holds; a cut header is corrupt.
            *multipart_corpus(wav_bytes(), wav_bytes()[:30], digit, "audio/wav"),
            ("NaN samples", files(("nan.wav", nan_wav())), 422),
            # The probe's file: its power spectrum overflowed and the score became NaN.
            ("samples of 1e30", files(("loud.wav", float_wav(np.full(3000, 1e30)))), 422),
            ("zero samples", files(("silent.wav", wav_bytes(seconds=0.0))), 422),
            ("over ten minutes", files(("long.flac", flac_silence(601))), 413),
        ]
    json_type = {"content-type": "application/json"}
    return [
        ("empty text", {"json": {"text": ""}}, 422),
        ("whitespace", {"json": {"texts": ["oil", " \u3000\n"]}}, 422),
        ("zero-width spaces", {"json": {"texts": ["oil", "\u200b\u200b"]}}, 422),
        ("NUL characters", {"json": {"text": "\u0000\u0000"}}, 422),
        ("empty list", {"json": {"texts": []}}, 422),
        ("too many texts", {"json": {"texts": ["oil"] * (MAX_FILES + 1)}}, 413),
        ("too long", {"json": {"text": "oil " * 3000}}, 413),
        ("not strings", {"json": {"texts": [1, None]}}, 422),
        ("both fields", {"json": {"text": "a", "texts": ["b"]}}, 422),
        ("nested", {"json": {"texts": [[["deep"]]]}}, 422),
        ("a list body", {"json": ["oil"]}, 422),
        ("invalid UTF-8", {"content": b'{"text": "caf\xe9"}', "headers": json_type}, 422),
        ("lone surrogate", {"content": b'{"text": "\\ud800"}', "headers": json_type}, 422),
        ("truncated JSON", {"content": b'{"texts": ["oil', "headers": json_type}, 422),
        ("plain text", {"content": b"oil", "headers": {"content-type": "text/plain"}}, 415),
        ("multipart", files(("a.txt", b"oil prices")), 415),
    ]


@pytest.fixture(scope="module")
def bundles(image_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "image": image_bundle,
        "text": tiny_bundle(root / "text", "text"),
        "audio": tiny_bundle(root / "audio", "audio"),
    }


def good_request(modality: str, digit: bytes) -> dict[str, Any]:
    if modality == "text":
        return {"json": {"texts": ["oil price", "wheat grain"]}}
    return files(("good", digit if modality == "image" else wav_bytes()))


@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_bad_input_corpus(
    modality: str, bundles: dict[str, Path], digit_images: list[DigitImage], tmp_path: Path
) -> None:
    digit = digit_images[0].read_bytes()
    log_url = f"sqlite:///{tmp_path / 'p.db'}"
    config = ServingSettings(max_files=MAX_FILES, max_text_chars=10_000, log_url=log_url)
    app = create_app(bundles[modality], config)
    with TestClient(app, raise_server_exceptions=True) as client:
        for case, arguments, status in corpus(modality, digit):
            response = client.post("/v1/predict", **arguments)
            assert response.status_code == status, f"{modality}, {case}: {response.text}"
            assert_error(response, status)
        assert PredictionLog(log_url).read() == []
        response = client.post("/v1/predict", **good_request(modality, digit))
        assert response.status_code == 200, response.text
    assert len(PredictionLog(log_url).read()) == (2 if modality == "text" else 1)


def test_an_input_the_model_answers_with_nan_is_a_422_naming_it(tmp_path: Path) -> None:
    """Only the input's own request fails; nothing of it is logged; the next request is fine."""
    bundle = tiny_bundle(tmp_path / "unstable", "image", unstable=True)  # NaN for dark images
    white, black = (png_bytes(Image.new("RGB", (16, 16), colour)) for colour in ("white", "black"))
    log_url = f"sqlite:///{tmp_path / 'p.db'}"
    with TestClient(create_app(bundle, ServingSettings(log_url=log_url))) as client:
        response = client.post("/v1/predict", **files(("white.png", white), ("black.png", black)))
        assert_error(response, 422, "file 1 ('black.png')", "NaN or infinite")
        response = client.post("/v1/predict", **files(("white.png", white)))
        assert response.status_code == 200, response.text
    rows = PredictionLog(log_url).read()
    assert len(rows) == 1 and rows[0].score == rows[0].score  # not NaN


def schemathesis_config() -> Any:
    from schemathesis.config import SchemathesisConfig

    # 413 is how this API refuses too many or too large inputs: a rejection like 422.
    rejection = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
    return SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": rejection}}}
    )


def run_schemathesis(url: str, modality: str) -> dict[str, dict[int, int]]:
    """Every operation, valid and invalid requests; returns status counts per operation."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=schemathesis_config())
    # A schema can say "binary file", not "a file that decodes as an image or audio": random
    # bytes are schema-valid yet rightly refused (415/422).
    excluded = [] if modality == "text" else [positive_data_acceptance]
    seen: dict[str, dict[int, int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            counts = seen.setdefault(f"{operation.label} {mode.value}", {})
            try:
                examples = MAX_EXAMPLES.get(operation.label, OTHER_EXAMPLES)
                strategy = operation.as_strategy(generation_mode=mode)
                checked(strategy, examples, url, counts, excluded)()
            except Unsatisfiable:  # no invalid request exists for an operation without inputs
                assert mode is GenerationMode.NEGATIVE
    return seen


def checked(
    strategy: Any, examples: int, url: str, counts: dict[int, int], excluded: list[Any]
) -> Any:
    """A hypothesis test: send each generated case, count its status, validate the response."""

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call(base_url=url, timeout=30)
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        case.validate_response(response, excluded_checks=excluded)

    return check


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_schemathesis_finds_no_server_error(
    modality: str, bundles: dict[str, Path], tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'p.db'}"
    limits = {"max_files": "4", "max_text_chars": "200"}  # small inputs: quick to generate
    with live_server(bundles[modality], tmp_path, log_url=log_url, **limits) as server:
        seen = run_schemathesis(server.url, modality)
        assert server.process.poll() is None
    statuses = {status for counts in seen.values() for status in counts}
    assert all(status < 500 for status in statuses), seen
    assert 200 in seen["POST /v1/predict positive"] or modality != "text", seen
    assert sum(seen["POST /v1/predict negative"].values()) >= 10, seen
