"""The predict latency the SLO reads: the server's answers only, never a slow client.

A real `mlfactory serve` answers one prediction and times out one upload that stopped
arriving (408 after `body_timeout_s`). The latency histogram keeps both, by status class, and
the selector of the shipped p99 recording rule (deploy/prometheus/mlfactory-rules.yml) picks
the answer alone.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.conftest import png

from .live_server import LiveServer, live_server
from .tiny_bundles import tiny_bundle

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "mlfactory-rules.yml"
P99_RULE = "job:mlfactory_predict_latency_seconds:p99_5m"
HISTOGRAM = "mlfactory_http_request_duration_seconds"
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("latency")
    bundle = tiny_bundle(workdir / "bundle", "image")
    with live_server(bundle, workdir, body_timeout_s=str(BODY_TIMEOUT_S)) as running:
        yield running


def stall_an_upload(server: LiveServer) -> bytes:
    """Declare a 100,000-byte upload, send 5 bytes, and wait for the server's answer."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10.0) as sock:
        sock.sendall(head + b"--x\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def rule_matchers() -> dict[str, str]:
    """label -> regex of the shipped p99 rule's histogram selector (`=` and `=~` alike)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    expr = next(r["expr"] for g in groups for r in g["rules"] if r.get("record") == P99_RULE)
    selector = re.search(rf"{HISTOGRAM}_bucket\{{([^}}]*)\}}", expr)
    assert selector, expr
    pairs = re.findall(r'(\w+)=~?"([^"]*)"', selector.group(1))
    return dict(pairs)


def counts_by_status_class(metrics: str, matchers: dict[str, str]) -> dict[str, float]:
    """status_class -> observations of the histogram's series that `matchers` select."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == f"{HISTOGRAM}_count" and all(
                re.fullmatch(pattern, labels.get(label, "")) for label, pattern in matchers.items()
            ):
                counts[labels["status_class"]] = sample.value
    return counts


def test_a_stalled_upload_is_timed_apart_from_the_answers_the_slo_reads(
    server: LiveServer,
) -> None:
    image = png(Image.new("RGB", (16, 16), (120, 30, 200)))
    answered = httpx.post(
        f"{server.url}/v1/predict", files=[("files", ("a.png", image, "image/png"))]
    )
    assert answered.status_code == 200, answered.text
    assert stall_an_upload(server).startswith(b"HTTP/1.1 408 ")
    metrics = httpx.get(f"{server.url}/metrics").text

    predict = {"endpoint": "/v1/predict"}
    assert counts_by_status_class(metrics, predict) == {"2xx": 1.0, "4xx": 1.0}
    slow = f'{HISTOGRAM}_bucket{{endpoint="/v1/predict",le="0.5",status_class="4xx"}} 0.0'
    assert slow in metrics, "the 408 waited a second for its body"
    assert rule_matchers()["status_class"]
    assert counts_by_status_class(metrics, rule_matchers()) == {"2xx": 1.0}
