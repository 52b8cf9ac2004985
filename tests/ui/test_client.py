"""The UI's HTTP client: answers as JSON, refusals and an unreachable API as one sentence."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mlfactory.serving.process import free_port
from mlfactory.ui.client import ApiClient, ApiError
from tests.serving.live_server import live_server
from tests.serving.tiny_bundles import tiny_bundle


def test_answers_refusals_and_missing_endpoints(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", "text")
    with live_server(bundle, tmp_path) as server:
        client = ApiClient(server.url + "/")
        assert client.model()["labels"] == ["crude", "grain", "ship"]
        answer = client.predict_texts(["crude oil prices rose"])
        assert answer["predictions"][0]["label"] in ("crude", "grain", "ship")
        with pytest.raises(ApiError) as refused:
            client.predict_texts([" "])
        assert refused.value.status == 422
        assert str(refused.value).endswith("(422)") and "text" in str(refused.value)
        with pytest.raises(ApiError) as missing:
            client.get("/v1/nothing-here")
        assert missing.value.status == 404
        assert str(missing.value) == (
            "GET /v1/nothing-here is not available on this server (404): it may predate it"
        )


def test_the_monitoring_token_goes_with_every_call(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", "text")
    with live_server(bundle, tmp_path, monitor_token="client-test-token") as server:
        answer = ApiClient(server.url, token="client-test-token").predict_texts(["crude oil"])
        request_id = answer["request_id"]
        guarded = ApiClient(server.url, token="client-test-token")
        assert guarded.feedback(request_id, 0, "crude")["stored"] == 1
        with pytest.raises(ApiError) as refused:
            ApiClient(server.url).feedback(request_id, 0, "crude")
        assert refused.value.status == 401
        assert str(refused.value) == (
            "missing monitoring token: send 'Authorization: Bearer <token>' (401): "
            "start `mlfactory ui` with MLFACTORY_MONITOR_TOKEN set to the server's"
        )


def test_an_unreachable_api_is_one_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiError) as unreachable:
        ApiClient(url).card()
    assert unreachable.value.status is None
    assert str(unreachable.value).startswith(f"cannot reach the API at {url} (ConnectError")
    assert str(unreachable.value).endswith("is `mlfactory serve` running there?")


def test_an_address_httpx_refuses_is_one_sentence() -> None:
    """An `mlfactory.ui.client.ApiClient` made some other way than by `mlfactory ui`, whose
    checks refuse such an address first."""
    with pytest.raises(ApiError) as invalid:
        ApiClient("http://127.0.0.1:abc").model()
    assert invalid.value.status is None
    assert str(invalid.value) == (
        "the API's address http://127.0.0.1:abc is not a valid URL (Invalid port: 'abc'): "
        "start `mlfactory ui` with --api set to the server's, e.g. http://127.0.0.1:8000"
    )


@pytest.mark.parametrize(
    ("api", "problem"),
    [
        ("localhost:8000", "is not an http(s) URL, e.g. http://127.0.0.1:8000"),
        ("ftp://127.0.0.1:8000", "is not an http(s) URL, e.g. http://127.0.0.1:8000"),
        (
            "http://127.0.0.1:abc",
            "is not a valid URL (Port could not be cast to integer value "
            "as 'abc'), e.g. http://127.0.0.1:8000",
        ),
        ("http://[::1", "is not a valid URL (Invalid IPv6 URL), e.g. http://127.0.0.1:8000"),
        (
            "http://127.0.0.1:70000",
            "is not a valid URL (Port out of range 0-65535), e.g. http://127.0.0.1:8000",
        ),
        ("http://127.0.0.1:0", ": the port must be 1 to 65535"),
        ("http://:8000", "names no host, e.g. http://127.0.0.1:8000"),
        (
            "http://127.0.0.1:8000/?x=1",
            "has a query or fragment: give the server's base URL, e.g. http://127.0.0.1:8000",
        ),
        (
            "http://127.0.0.1:8000#top",
            "has a query or fragment: give the server's base URL, e.g. http://127.0.0.1:8000",
        ),
    ],
)
def test_ui_refuses_an_api_it_could_not_call(api: str, problem: str) -> None:
    """One `error:` line and exit code 2, before Streamlit starts."""
    from typer.testing import CliRunner

    from mlfactory.cli import app

    result = CliRunner().invoke(app, ["ui", "--api", api])
    assert result.exit_code == 2, result.output
    separator = "" if problem.startswith(":") else " "
    assert result.output.strip() == f"error: --api {api!r}{separator}{problem}"
    assert "Traceback" not in result.output


def test_ui_on_a_port_another_server_holds_is_one_line() -> None:
    """Streamlit would print "Port N is not available" and exit with code 1."""
    from typer.testing import CliRunner

    from mlfactory.cli import app

    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        result = CliRunner().invoke(
            app, ["ui", "--api", "http://127.0.0.1:8000", "--port", str(port)]
        )
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: --host 127.0.0.1 --port {port}: cannot listen: Address already in use: "
        "another server is listening there; choose another --port"
    )


@pytest.mark.parametrize("command", ["ui", "serve"])
@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_one_line(command: str, port: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mlfactory.cli import app

    if command == "ui":
        target = ["--api", "http://127.0.0.1:8000"]
    else:
        target = [str(tiny_bundle(tmp_path / "bundle", "image"))]
    result = CliRunner().invoke(app, [command, *target, "--port", port])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: --port: {port} is not a TCP port"
