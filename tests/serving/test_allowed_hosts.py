"""`MLFACTORY_ALLOWED_HOSTS`: a request whose Host header names no allowed host is refused with
a JSON 400, counted like any request; probes and scrapes as Kubernetes sends them pass with the
settings of deploy/kubernetes/mlfactory.yaml; and a real server behaves the same."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from mlfactory.serving.app import create_app
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.process import HOST
from mlfactory.serving.settings import ServingSettings

from .conftest import DigitImage, upload
from .live_server import live_server

MANIFEST = Path(__file__).parents[2] / "deploy" / "kubernetes" / "mlfactory.yaml"
# What the kubelet's HTTP probes send (Go's client names the URL's host and port).
PROBE_HEADERS = {"User-Agent": "kube-probe/1.31", "Accept": "*/*"}
POD_IP, NAMESPACE = "10.244.3.17", "models"


def refused(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    detail: str = response.json()["detail"]
    assert "MLFACTORY_ALLOWED_HOSTS" in detail
    return detail


@pytest.fixture
def guarded(image_bundle: Path, log_url: str) -> TestClient:
    settings = ServingSettings(log_url=log_url, allowed_hosts="api.example.com,*.internal")
    with TestClient(create_app(image_bundle, settings)) as client:
        yield client  # type: ignore[misc]


@pytest.mark.parametrize(
    "host",
    [
        "api.example.com",
        "API.Example.com:8443",  # names compare without case or port
        "scorer.internal",
        "a.b.internal",
        "localhost:8000",
        "127.0.0.1:8000",
        "[::1]:8000",
    ],
)
def test_a_listed_or_loopback_host_is_served(guarded: TestClient, host: str) -> None:
    assert guarded.get("/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "api.example.com.evil.example", "internal", "10.0.0.1", "[fd00::1]"]
)
def test_another_host_gets_a_json_400_naming_it(guarded: TestClient, host: str) -> None:
    detail = refused(guarded.get("/health", headers={"Host": host}))
    assert detail.startswith(f"Host {host!r}: this server answers only to the host names")


def test_a_refused_host_reaches_no_route_and_is_counted(
    guarded: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    files = [upload("d.png", digit_images[0].read_bytes())]
    response = guarded.post("/v1/predict", files=files, headers={"Host": "rebound.example"})
    refused(response)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    allowed = guarded.post("/v1/predict", files=files, headers={"Host": "api.example.com"})
    assert allowed.status_code == 200
    metrics = guarded.get("/metrics", headers={"Host": "api.example.com"}).text
    counted = 'mlfactory_http_requests_total{endpoint="unmatched",method="POST",status="400"} 1.0'
    assert counted in metrics
    assert 'endpoint="/v1/predict",method="POST",status="200"} 1.0' in metrics
    [logged] = PredictionLog(log_url).read()  # the refused request was never predicted
    assert logged.request_id == allowed.json()["request_id"]


def manifest_environment() -> dict[str, str]:
    """The server container's environment as the kubelet gives it: the downward API's values
    filled in, then `$(NAME)` references to earlier variables expanded."""
    [deployment] = [
        d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "Deployment"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    fields = {"status.podIP": POD_IP, "metadata.namespace": NAMESPACE}
    environment: dict[str, str] = {}
    for variable in container["env"]:
        if "value" in variable:
            environment[variable["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: environment.get(m[1], m[0]), variable["value"]
            )
        elif "fieldRef" in variable["valueFrom"]:
            environment[variable["name"]] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return environment


def test_the_kubernetes_manifest_lets_probes_scrapes_and_the_service_through(
    image_bundle: Path, log_url: str
) -> None:
    environment = manifest_environment()
    port = environment["PORT"]
    allowed = environment["MLFACTORY_ALLOWED_HOSTS"]
    assert "$(" not in allowed, allowed
    settings = ServingSettings(log_url=log_url, allowed_hosts=allowed)
    with TestClient(create_app(image_bundle, settings)) as client:
        probe = client.get("/health", headers={**PROBE_HEADERS, "Host": f"{POD_IP}:{port}"})
        assert probe.status_code == 200
        scrape = client.get("/metrics", headers={"Host": f"{POD_IP}:{port}"})
        assert scrape.status_code == 200
        for name in ("mlfactory-digits", f"mlfactory-digits.{NAMESPACE}.svc.cluster.local"):
            assert client.get("/v1/model", headers={"Host": name}).status_code == 200
        refused(client.get("/health", headers={"Host": "10.244.3.18:8080"}))  # another pod
        refused(client.get("/v1/model", headers={"Host": "mlfactory-digits.evil.example"}))


def raw_request(url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes to a server, read the status and the body of its answer."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection((HOST, port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_real_server_refuses_other_hosts_and_a_request_without_one(
    image_bundle: Path, tmp_path: Path
) -> None:
    """uvicorn, not the test client: its start-up wait calls /health on 127.0.0.1 (loopback),
    and an HTTP/1.0 request may carry no Host header at all."""
    with live_server(image_bundle, tmp_path, allowed_hosts="scorer.example") as server:
        assert httpx.get(f"{server.url}/health", headers={"Host": "scorer.example"}).is_success
        refused(httpx.get(f"{server.url}/health", headers={"Host": "rebound.example"}))
        status, body = raw_request(server.url, b"GET /health HTTP/1.0\r\n\r\n")
        assert status == 400 and b'"no Host header: this server answers only' in body
        status, _ = raw_request(server.url, b"GET /health HTTP/1.0\r\nHost: scorer.example\r\n\r\n")
        assert status == 200
