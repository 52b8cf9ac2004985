"""Every bad input gets a 4xx with a one-sentence string `detail`, never a 500.

The clients here re-raise any exception that reaches the catch-all handler, so a bad input that
slipped through to a 500 fails the test instead of passing unnoticed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mlfactory.predictor import Predictor
from mlfactory.serving.app import NOT_LOGGED_TWICE, create_app
from mlfactory.serving.settings import ServingSettings
from tests.hostile_files import bomb_png

from .conftest import DigitImage, png_bytes, upload


def assert_error(response: Any, status: int, *fragments: str) -> str:
    """The response is `status` with a one-line string detail holding every fragment.

    `response` is an httpx (or, for starlette's TestClient, httpx2) response.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"}
    detail = body["detail"]
    assert isinstance(detail, str)
    assert detail and "\n" not in detail
    for fragment in fragments:
        assert fragment in detail
    return detail


@pytest.fixture
def strict_client(image_bundle: Path) -> Iterator[TestClient]:
    """Small limits so that the limit checks are reachable with real, small files."""
    settings = ServingSettings(max_upload_bytes=20_000, max_files=3, max_request_bytes=200_000)
    with TestClient(create_app(image_bundle, settings), raise_server_exceptions=True) as client:
        yield client


def test_text_file_renamed_png_is_415(
    client: TestClient, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("shopping list: eggs, milk, bread\n")
    files = [upload(d.path.name, d.read_bytes()) for d in digit_images[:2]]
    files.append(upload(notes.name, notes.read_bytes()))
    response = client.post("/v1/predict", files=files)
    assert_error(response, 415, "file 2 ('notes.png')", "not an image")


def test_truncated_png_is_422(client: TestClient, digit_images: list[DigitImage]) -> None:
    data = digit_images[5].read_bytes()
    half = data[: len(data) // 2]
    response = client.post("/v1/predict", files=[upload("half.png", half)])
    assert_error(response, 422, "file 0 ('half.png')", "truncated")


def test_empty_file_is_422(client: TestClient, digit_images: list[DigitImage]) -> None:
    files = [upload("good.png", digit_images[0].read_bytes()), upload("empty.png", b"")]
    response = client.post("/v1/predict", files=files)
    assert_error(response, 422, "file 1 ('empty.png')", "empty")


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (20_000, 20_000, "400000000 pixels exceeds the limit of 40000000"),
        (7_000, 7_000, "7000x7000"),
    ],
)
def test_decompression_bomb_is_413(
    client: TestClient, width: int, height: int, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bomb_png(width, height)
    assert len(data) < 200_000  # small on the wire ...
    with monkeypatch.context() as unlimited:
        unlimited.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (width, height)  # ... and a real PNG PIL can open
    response = client.post("/v1/predict", files=[upload("bomb.png", data)])
    assert_error(response, 413, "file 0 ('bomb.png')", reason)


def test_file_over_the_size_limit_is_413(
    strict_client: TestClient, digit_images: list[DigitImage]
) -> None:
    rng = np.random.default_rng(0)
    noise = png_bytes(Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)))
    assert len(noise) > 20_000
    files = [upload("ok.png", digit_images[0].read_bytes()), upload("noise.png", noise)]
    response = strict_client.post("/v1/predict", files=files)
    assert_error(response, 413, "file 1 ('noise.png')", "20000 bytes")


def test_request_over_the_body_limit_is_413(
    strict_client: TestClient, digit_images: list[DigitImage]
) -> None:
    rng = np.random.default_rng(1)
    noise = png_bytes(Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)))
    response = strict_client.post("/v1/predict", files=[upload("big.png", noise)])
    assert_error(response, 413, "request body too large", "200000 bytes")


def test_too_many_files_is_413(strict_client: TestClient, digit_images: list[DigitImage]) -> None:
    files = [upload(d.path.name, d.read_bytes()) for d in digit_images[:4]]
    response = strict_client.post("/v1/predict", files=files)
    assert_error(response, 413, "too many files", "3")
    ok = strict_client.post("/v1/predict", files=files[:3])
    assert ok.status_code == 200


def test_no_body_is_422_naming_the_files_field(client: TestClient) -> None:
    assert_error(client.post("/v1/predict"), 422, "no files", "'files'")


def test_wrong_field_name_is_422_naming_the_files_field(
    client: TestClient, digit_images: list[DigitImage]
) -> None:
    data = digit_images[0].read_bytes()
    response = client.post("/v1/predict", files=[("file", ("d.png", data, "image/png"))])
    assert_error(response, 422, "no files", "'files'", "'file'")


def test_files_field_without_a_file_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", files={"other": ("a.png", b"x")}, data={"files": "not a file"}
    )
    assert_error(response, 422, "'files'", "file uploads")


def test_empty_form_part_from_a_browser_counts_as_no_file(client: TestClient) -> None:
    # What a browser sends for an <input type=file name=files> left empty.
    body = (
        b"--x\r\n"
        b'Content-Disposition: form-data; name="files"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"\r\n--x--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=x"}
    response = client.post("/v1/predict", content=body, headers=headers)
    assert_error(response, 422, "no files", "'files'")


def test_json_body_to_an_image_bundle_is_415(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"texts": ["hello"]})
    assert_error(response, 415, "application/json", "multipart/form-data", "'files'")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "image/png", "application/x-www-form-urlencoded"]
)
def test_wrong_content_type_is_415(
    client: TestClient, digit_images: list[DigitImage], content_type: str
) -> None:
    response = client.post(
        "/v1/predict", content=digit_images[0].read_bytes(), headers={"content-type": content_type}
    )
    assert_error(response, 415, content_type, "multipart/form-data")


@pytest.mark.parametrize(
    ("content_type", "body", "fragment"),
    [
        ("multipart/form-data", b"--x\r\n", "no boundary"),
        ("multipart/form-data; boundary=x", b"garbage without any boundary", "malformed"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\nab',
            "closing boundary",
        ),
    ],
)
def test_malformed_multipart_is_422(
    client: TestClient, content_type: str, body: bytes, fragment: str
) -> None:
    response = client.post("/v1/predict", content=body, headers={"content-type": content_type})
    assert_error(response, 422, fragment)


def test_validation_errors_are_one_string(client: TestClient) -> None:
    app = client.app

    @app.get("/probe")  # type: ignore[attr-defined]
    def probe(count: int) -> dict[str, int]:
        return {"count": count}

    response = client.get("/probe", params={"count": "seven"})
    assert_error(response, 422, "invalid request", "query.count", "integer")
    assert_error(client.get("/probe"), 422, "query.count", "required")


def test_unknown_path_and_method_have_string_details(client: TestClient) -> None:
    assert_error(client.get("/v2/predict"), 404, "Not Found")
    assert_error(client.get("/v1/predict"), 405, "Method Not Allowed")
    assert client.get("/v1/predict").headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/health", "/v1/model", "/metrics"])
def test_a_405_allows_head_where_head_answers(client: TestClient, path: str) -> None:
    refused = client.post(path)
    assert_error(refused, 405, "Method Not Allowed")
    assert refused.headers["allow"] == "GET, HEAD"
    assert client.head(path).status_code == 200


def test_unexpected_failure_is_a_json_500(
    image_bundle: Path, digit_images: list[DigitImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_run(self: Predictor, encoded: object) -> object:
        raise RuntimeError("onnxruntime fell over")

    app = create_app(image_bundle, ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(Predictor, "run", broken_run)  # after the start-up test run
        response = client.post("/v1/predict", files=[upload("d.png", digit_images[0].read_bytes())])
    detail = assert_error(response, 500, "internal server error", "RuntimeError")
    assert "onnxruntime fell over" not in detail  # internals stay in the server log


def test_an_unexpected_failure_is_logged_once(
    image_bundle: Path,
    digit_images: list[DigitImage],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_run(self: Predictor, encoded: object) -> object:
        raise RuntimeError("onnxruntime fell over")

    app = create_app(image_bundle, ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(Predictor, "run", broken_run)
        client.post("/v1/predict", files=[upload("d.png", digit_images[0].read_bytes())])
    ours = [r for r in caplog.records if r.getMessage().startswith("unhandled error on POST")]
    assert len(ours) == 1 and ours[0].exc_info is not None
    uvicorn_log = logging.getLogger("uvicorn.error")
    # Starlette raises the exception again after the 500; uvicorn's record of it is dropped,
    # and only that one: an exception the handler did not log still reaches uvicorn's log.
    again = uvicorn_log.makeRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "Exception in ASGI application\n",
        (),
        ours[0].exc_info,
    )
    assert NOT_LOGGED_TWICE in uvicorn_log.filters and not uvicorn_log.filter(again)
    other = RuntimeError("elsewhere")
    fresh = uvicorn_log.makeRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "x", (), (RuntimeError, other, None)
    )
    assert uvicorn_log.filter(fresh)


def test_decoder_crash_on_odd_bytes_is_still_a_4xx(
    client: TestClient, digit_images: list[DigitImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor: Predictor = client.app.state.predictor  # type: ignore[attr-defined]

    def crashing_encode(raw: bytes) -> object:
        raise IndexError("tile index out of range")  # what a PIL plugin may raise

    monkeypatch.setattr(predictor, "encode", crashing_encode)
    response = client.post("/v1/predict", files=[upload("odd.tif", digit_images[0].read_bytes())])
    assert_error(response, 422, "file 0 ('odd.tif')", "could not be decoded", "IndexError")
