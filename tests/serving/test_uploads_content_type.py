"""JSON endpoints of a real `mlfactory serve` process require `Content-Type: application/json`.

A web page on another site may post a `text/plain` body, or a `Blob` with no Content-Type at
all, without the browser asking the server first (a CORS "simple request"); only
`application/json` needs the server's consent. So a body without that type is refused (415) by
`POST /v1/predict` of a text bundle and by `POST /v1/feedback`, before it is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from .live_server import LiveServer, live_server
from .tiny_bundles import tiny_bundle

TEXTS = json.dumps({"texts": ["grain prices rose"]}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("content-type")
    bundle = tiny_bundle(workdir / "bundle", "text")
    with live_server(bundle, workdir, log_url=f"sqlite:///{workdir / 'log.db'}") as running:
        yield running


def post(server: LiveServer, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=10.0)


def test_a_json_body_without_a_content_type_is_refused(server: LiveServer) -> None:
    predicted = post(server, "/v1/predict", TEXTS, {"Content-Type": "application/json"})
    assert predicted.status_code == 200, predicted.text
    feedback = json.dumps({"request_id": predicted.json()["request_id"], "label": "grain"})
    for path, body in (("/v1/predict", TEXTS), ("/v1/feedback", feedback.encode())):
        for headers in ({}, {"Content-Type": "text/plain;charset=UTF-8"}):
            refused = post(server, path, body, headers)
            assert refused.status_code == 415, (path, headers, refused.text)
            assert "application/json" in refused.json()["detail"]
    untyped = post(server, "/v1/feedback", feedback.encode(), {})
    assert untyped.json()["detail"].startswith("no Content-Type header: send Content-Type: ")
    stored = post(server, "/v1/feedback", feedback.encode(), {"Content-Type": "application/json"})
    assert (stored.status_code, stored.json()) == (200, {"stored": 1})
