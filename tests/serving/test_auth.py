"""The tokens: with `MLFACTORY_MONITOR_TOKEN` set, the drift reports and feedback want it (they
name other clients' requests, and set the live accuracy); unset, they are open. Failed tries at
it or at the admin token are logged and throttled per address."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mlfactory.serving.app import create_app
from mlfactory.serving.auth import AuthThrottle
from mlfactory.serving.settings import ServingSettings
from tests.monitoring.conftest import digit_images, png

from .conftest import upload
from .live_server import live_server
from .test_bad_inputs import assert_error

TOKEN = "test-monitor-token"
ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GUARDED = [
    ("GET", "/v1/monitoring/drift"),
    ("GET", "/v1/monitoring/history"),
    ("POST", "/v1/feedback"),
]


def guarded_app(bundle: Any, log_url: str, **settings: Any) -> TestClient:
    return TestClient(create_app(bundle, ServingSettings(log_url=log_url, **settings)))


@pytest.fixture
def guarded(monitored_digits: Any, log_url: str) -> Iterator[TestClient]:
    """The trained digits bundle (with its profile), served with a monitoring token."""
    with guarded_app(monitored_digits.bundle.path, log_url, monitor_token=TOKEN) as client:
        yield client


def predict_digit(client: TestClient) -> str:
    """Send one real held-out digit; its request id."""
    image, _ = digit_images(offset=300, per_class=1)[0]
    response = client.post("/v1/predict", files=[upload("d.png", png(image))])
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}]
)
def test_the_reports_and_feedback_want_the_token(
    guarded: TestClient, headers: dict[str, str]
) -> None:
    request_id = predict_digit(guarded)  # predictions stay open to every client
    for method, path in GUARDED:
        body = {"request_id": request_id, "label": "0"} if method == "POST" else None
        response = guarded.request(method, path, headers=headers, json=body)
        said = "wrong monitoring token" if headers else "missing monitoring token"
        assert_error(response, 401, said, "Bearer <token>")
        assert response.headers["www-authenticate"] == "Bearer"
    # nothing was stored by the refused feedback
    report = guarded.get("/v1/monitoring/drift", headers=AUTH).json()
    assert report["accuracy"]["labelled"] == 0


def test_with_the_token_they_answer_and_the_rest_stays_open(guarded: TestClient) -> None:
    request_id = predict_digit(guarded)
    feedback = {"request_id": request_id, "label": "0"}
    stored = guarded.post("/v1/feedback", headers=AUTH, json=feedback)
    assert stored.status_code == 200 and stored.json() == {"stored": 1}
    report = guarded.get("/v1/monitoring/drift", headers=AUTH)
    assert report.status_code == 200 and report.json()["accuracy"]["labelled"] == 1
    history = guarded.get("/v1/monitoring/history", headers=AUTH, params={"buckets": 2})
    assert history.status_code == 200 and len(history.json()["buckets"]) == 2
    for path in ("/health", "/v1/model", "/v1/model/card", "/metrics"):
        assert guarded.get(path).status_code == 200, path


def test_without_a_token_they_are_open(monitored_digits: Any, log_url: str) -> None:
    with guarded_app(monitored_digits.bundle.path, log_url) as client:
        request_id = predict_digit(client)
        assert client.post("/v1/feedback", json={"request_id": request_id, "label": "0"}).is_success
        assert client.get("/v1/monitoring/drift").json()["accuracy"]["labelled"] == 1


@pytest.mark.parametrize(
    ("name", "method", "path", "other"),
    [
        ("monitoring", "GET", "/v1/monitoring/drift", ("admin", "POST", "/v1/admin/reload")),
        ("admin", "POST", "/v1/admin/reload", ("monitoring", "GET", "/v1/monitoring/drift")),
    ],
)
def test_failed_tries_are_throttled_per_address_and_logged(
    name: str,
    method: str,
    path: str,
    other: tuple[str, str, str],
    monitored_digits: Any,
    log_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = {"monitoring": TOKEN, "admin": ADMIN_TOKEN}
    settings = {"monitor_token": TOKEN, "admin_token": ADMIN_TOKEN, "admin_failures_per_minute": 3}
    wrong = {"Authorization": "Bearer guess-number-n"}
    with (
        guarded_app(monitored_digits.bundle.path, log_url, **settings) as client,
        caplog.at_level(logging.WARNING, logger="mlfactory.serving.auth"),
    ):
        for _ in range(3):
            assert_error(client.request(method, path, headers=wrong), 401, f"{name} token")
        right = {"Authorization": f"Bearer {tokens[name]}"}
        refused = client.request(method, path, headers=right)  # even the right token now
        assert_error(refused, 429, f"too many failed {name} authentications from testclient")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # one count per address, whichever token it guessed
        other_name, other_method, other_path = other
        other_right = {"Authorization": f"Bearer {tokens[other_name]}"}
        assert_error(client.request(other_method, other_path, headers=other_right), 429)
        assert client.get("/health").status_code == 200  # the rest of the API is not throttled
    failures = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert failures == [
        f"{name} authentication failed from testclient ({count} in the last minute)"
        for count in (1, 2, 3)
    ]
    assert all(token not in caplog.text for token in tokens.values())
    assert "guess-number-n" not in caplog.text


def test_requests_without_a_token_are_refused_but_lock_no_one_out(
    monitored_digits: Any, log_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that does not know of the token (a UI started without it) guesses nothing: it
    must not lock out the clients at its address that carry the token."""
    settings = {"monitor_token": TOKEN, "admin_token": ADMIN_TOKEN, "admin_failures_per_minute": 3}
    with (
        guarded_app(monitored_digits.bundle.path, log_url, **settings) as client,
        caplog.at_level(logging.WARNING, logger="mlfactory.serving.auth"),
    ):
        for _ in range(10):
            refused = client.get("/v1/monitoring/drift")
            assert_error(refused, 401, "missing monitoring token: send 'Authorization: Bearer")
            assert refused.headers["www-authenticate"] == "Bearer"
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/monitoring/drift", headers=right).status_code == 200
        wrong = {"Authorization": "Bearer guess-number-n"}
        assert_error(client.get("/v1/monitoring/drift", headers=wrong), 401, "wrong monitoring")
        assert_error(client.post("/v1/admin/reload", headers={"Authorization": ""}), 401, "wrong")
    assert "authentication failed from testclient (2 in the last minute)" in caplog.text


def test_the_openapi_document_shows_the_scheme_and_the_refusals(guarded: TestClient) -> None:
    document = guarded.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path in GUARDED:
        operation = document["paths"][path][method.lower()]
        assert {"401", "429"} <= set(operation["responses"]), path
        assert operation["security"] == [{"HTTPBearer": []}], path
    assert "security" not in document["paths"]["/v1/predict"]["post"]


def test_the_throttle_counts_each_address_apart() -> None:
    throttle = AuthThrottle(limit=2)
    assert throttle.record_failure("10.0.0.1") == 1
    assert throttle.retry_after("10.0.0.1") is None
    throttle.record_failure("10.0.0.1")
    wait = throttle.retry_after("10.0.0.1")
    assert wait is not None and 59 < wait <= 60
    assert throttle.retry_after("10.0.0.2") is None


@pytest.mark.parametrize("trusted", [False, True])
def test_a_forwarded_address_counts_only_behind_a_named_proxy(
    trusted: bool, image_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real server: a client that sends its own X-Forwarded-For must not dodge the lockout
    (uvicorn believes 127.0.0.1's by default); behind a proxy named in FORWARDED_ALLOW_IPS
    the forwarded address is the client's, and each one is counted apart."""
    if trusted:
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")
    else:
        monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    settings = {"admin_token": ADMIN_TOKEN, "admin_failures_per_minute": "2"}
    with live_server(image_bundle, tmp_path, **settings) as server:

        def reload_from(address: str) -> httpx.Response:
            headers = {"Authorization": "Bearer guess", "X-Forwarded-For": address}
            return httpx.post(f"{server.url}/v1/admin/reload", headers=headers, timeout=10)

        assert [reload_from(f"10.0.0.{n}").status_code for n in (1, 2)] == [401, 401]
        third = reload_from("10.0.0.3")
        if trusted:
            assert third.status_code == 401  # a third client, not yet refused
            assert reload_from("10.0.0.1").status_code == 401
            assert_error(reload_from("10.0.0.1"), 429, "authentications from 10.0.0.1")
        else:
            assert_error(third, 429, "too many failed admin authentications from 127.0.0.1")
        server.stop()
        log = server.output.read_text()
    shown = "10.0.0.1" if trusted else "127.0.0.1"
    assert f"admin authentication failed from {shown} (1 in the last minute)" in log
    assert ("10.0.0." in log) is trusted
