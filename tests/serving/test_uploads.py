"""Body reading: limits hold before and while bytes arrive, so memory stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlfactory.errors import InputError
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from mlfactory.serving.uploads import MAX_PARTS, check_content_length, read_body, read_uploads

from .conftest import DigitImage

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
CHUNK = 1024


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart body from (field name, filename or None, data) parts."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


class CountingStream:
    """Yields a body in 1 KiB chunks and counts how many were taken."""

    def __init__(self, body: bytes) -> None:
        self.chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.taken += 1
            yield chunk


def read(
    body: bytes | CountingStream, settings: ServingSettings, content_type: str = CONTENT_TYPE
) -> Any:
    stream = body if isinstance(body, CountingStream) else CountingStream(body)
    return asyncio.run(read_uploads(content_type, aiter(stream), settings))


def test_returns_the_files_in_order_and_skips_other_fields() -> None:
    body = multipart(
        ("files", "a.png", b"first"),
        ("comment", None, b"ignored"),
        ("files", "b.png", b"\r\nsecond\r\n"),
        ("extra", "c.png", b"not in files"),
    )
    uploads = read(body, ServingSettings())
    assert [(u.index, u.filename, u.data) for u in uploads] == [
        (0, "a.png", b"first"),
        (1, "b.png", b"\r\nsecond\r\n"),
    ]
    assert uploads[1].describe() == "file 1 ('b.png')"


def test_a_name_sent_only_as_filename_star_is_a_file() -> None:
    """RFC 5987's `filename*=` (which RFC 7578 forbids, yet some clients send for names
    beyond ASCII) is a file upload with its decoded name, not a plain form value."""
    parts = [
        ("filename*=UTF-8''%E2%9C%93%20check.png", "\u2713 check.png"),
        ("filename*=\"UTF-8''caf%C3%A9.png\"", "caf\u00e9.png"),
        ("FILENAME*=iso-8859-1'en'caf%E9.png", "caf\u00e9.png"),
        ("filename*=x-no-such-charset''a%20b.png", "a b.png"),
        ("filename=\"plain.png\"; filename*=UTF-8''ignored.png", "plain.png"),
    ]
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
    body = b"".join(f"{head}{disposition}\r\n\r\ndata\r\n".encode() for disposition, _ in parts)
    uploads = read(body + f"--{BOUNDARY}--\r\n".encode(), ServingSettings())
    assert [u.filename for u in uploads] == [name for _, name in parts]


def test_a_file_name_over_the_part_header_limit_says_so() -> None:
    with pytest.raises(InputError, match=r"a part's header line is over 4224 bytes \(a file "):
        read(multipart(("files", "a" * 5000 + ".png", b"data")), ServingSettings())


def test_long_filenames_are_shortened_in_messages() -> None:
    [upload] = read(multipart(("files", "x" * 500 + ".png", b"data")), ServingSettings())
    assert len(upload.describe()) < 100


def test_oversized_file_is_refused_before_the_body_is_read() -> None:
    stream = CountingStream(multipart(("files", "big.png", b"\xff" * 100 * CHUNK)))
    with pytest.raises(InputError, match=r"file 0 \('big.png'\): file too large") as caught:
        read(stream, ServingSettings(max_upload_bytes=10 * CHUNK))
    assert caught.value.status_code == 413
    assert stream.taken <= 12 < len(stream.chunks)


def test_one_file_too_many_is_refused_when_it_starts() -> None:
    parts = [("files", f"{i}.png", b"\x01" * 3 * CHUNK) for i in range(20)]
    stream = CountingStream(multipart(*parts))
    with pytest.raises(InputError, match="too many files: at most 2") as caught:
        read(stream, ServingSettings(max_files=2))
    assert caught.value.status_code == 413
    assert stream.taken < len(stream.chunks) / 2


def test_thousands_of_small_form_fields_are_refused_at_the_first_too_many() -> None:
    parts = [("files", "a.png", b"image")] + [("f", None, b"x")] * 5_000
    stream = CountingStream(multipart(*parts))
    with pytest.raises(InputError, match="too many form fields: at most 1000 parts") as caught:
        read(stream, ServingSettings())
    assert caught.value.status_code == 413
    assert stream.taken < len(stream.chunks) / 4
    assert len(read(multipart(*parts[:MAX_PARTS]), ServingSettings())) == 1


def test_a_body_that_does_not_begin_with_its_boundary_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = b"a preamble\r\n" + multipart(("files", "a.png", b"data"))
    with pytest.raises(InputError, match="does not begin with the boundary '--b0undary'") as caught:
        read(body, ServingSettings())
    assert caught.value.status_code == 422
    assert caplog.records == []  # the parser's own warning stays out of the server's log
    cut = multipart(("files", "a.png", b"data"))[:-5]  # begins right, ends early
    with pytest.raises(InputError, match="ends before its closing boundary"):
        read(cut, ServingSettings())


def test_body_limit_holds_while_reading_other_fields() -> None:
    stream = CountingStream(multipart(("padding", None, b"\x00" * 200 * CHUNK)))
    with pytest.raises(InputError, match="request body too large") as caught:
        read(stream, ServingSettings(max_request_bytes=20 * CHUNK))
    assert caught.value.status_code == 413
    assert stream.taken == 21


def test_read_body_stops_at_the_limit() -> None:
    stream = CountingStream(b"{" * 50 * CHUNK)
    with pytest.raises(InputError, match="exceeds the limit of 5120 bytes"):
        asyncio.run(read_body(aiter(stream), 5 * CHUNK))
    assert stream.taken == 6
    assert asyncio.run(read_body(aiter(CountingStream(b"{}")), 2)) == b"{}"


def test_content_length_check() -> None:
    check_content_length(None, 10)
    check_content_length("10", 10)
    with pytest.raises(InputError, match="11 bytes exceeds the limit of 10 bytes") as too_big:
        check_content_length("11", 10)
    assert too_big.value.status_code == 413
    with pytest.raises(InputError, match="invalid Content-Length") as invalid:
        check_content_length("lots", 10)
    assert invalid.value.status_code == 400


def asgi_request(
    client: TestClient,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    on_receive: Callable[[], None] = lambda: None,
    path: str = "/v1/predict",
) -> tuple[int, bytes, int]:
    """Send one POST (to /v1/predict) straight to the ASGI app; returns status, body, chunks
    read."""
    messages: list[MutableMapping[str, Any]] = []
    taken = 0

    async def receive() -> dict[str, Any]:
        nonlocal taken
        on_receive()
        taken += 1
        if taken > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[taken - 1], "more_body": taken < len(chunks)}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def call_app() -> None:
        await client.app(scope, receive, send)

    assert client.portal is not None  # the client was started (lifespan ran)
    client.portal.call(call_app)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return status, body, taken


def test_declared_length_over_the_limit_is_refused_unread(image_bundle: Path) -> None:
    def must_not_read() -> None:
        raise AssertionError("the body was read although Content-Length was over the limit")

    app = create_app(image_bundle, ServingSettings(max_request_bytes=1000))
    with TestClient(app) as client:
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", b"5000000")]
        status, body, _ = asgi_request(client, headers, [b"x"], on_receive=must_not_read)
    assert status == 413
    assert b"5000000 bytes exceeds the limit of 1000 bytes" in body


@pytest.mark.parametrize(
    ("path", "content_type"), [("/v1/predict", CONTENT_TYPE), ("/v1/feedback", "application/json")]
)
def test_a_compressed_body_is_refused_unread(
    image_bundle: Path, path: str, content_type: str, tmp_path: Path
) -> None:
    """The limits count what the model gets: a gzip body is 415 naming the encoding, not a
    "malformed body" from the bytes a parser cannot read."""

    def must_not_read() -> None:
        raise AssertionError("the body of a compressed request was read")

    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    with TestClient(create_app(image_bundle, ServingSettings(log_url=log_url))) as client:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-encoding", b"gzip"),
            (b"content-length", b"10"),
        ]
        status, body, _ = asgi_request(
            client, headers, [b"\x1f\x8b"], path=path, on_receive=must_not_read
        )
    assert status == 415
    assert b"Content-Encoding 'gzip' is not supported: send the body uncompressed" in body


def test_chunked_upload_over_the_file_limit_stops_early(
    image_bundle: Path, digit_images: list[DigitImage]
) -> None:
    body = multipart(
        ("files", "ok.png", digit_images[0].read_bytes()),
        ("files", "huge.png", b"\x00" * 500 * CHUNK),
    )
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    app = create_app(image_bundle, ServingSettings(max_upload_bytes=8 * CHUNK))
    with TestClient(app) as client:  # no Content-Length: as with Transfer-Encoding: chunked
        status, answer, taken = asgi_request(
            client, [(b"content-type", CONTENT_TYPE.encode())], chunks
        )
    assert status == 413, answer
    assert b"file 1 ('huge.png'): file too large" in answer
    assert taken < 20 < len(chunks)
