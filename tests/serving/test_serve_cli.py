"""`mlfactory serve` for real: a uvicorn process on 127.0.0.1, spoken to over HTTP.

Also checks that neither the server process nor a process that builds and runs the app ever
imports torch.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from mlfactory.errors import BundleError, ConfigError
from mlfactory.serving.app import BUNDLE_ENV, app_from_env
from mlfactory.serving.process import check_can_listen
from mlfactory.serving.run import open_endpoints_warning, run_server
from mlfactory.serving.settings import ServingSettings
from tests.corrupt_bundles import CORRUPTIONS, corrupt_copy

from .conftest import LABELS, DigitImage
from .live_server import free_port, live_server, server_env
from .tiny_bundles import tiny_bundle


def test_serve_command_answers_over_http_without_torch(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    # a misspelt setting is named at start-up, not silently the default
    with live_server(image_bundle, tmp_path, "--workers", "1", max_upload_byte="1") as server:
        url = server.url
        assert (
            "warning: no setting is named MLFACTORY_MAX_UPLOAD_BYTE (did you mean "
            "MLFACTORY_MAX_UPLOAD_BYTES?)" in server.output.read_text()
        )
        chosen = [digit_images[4], digit_images[21]]
        files = [("files", (d.path.name, d.read_bytes(), "image/png")) for d in chosen]
        response = httpx.post(f"{url}/v1/predict", files=files, timeout=30.0)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == 2
        assert all(list(p["probabilities"]) == LABELS for p in predictions)
        bad = httpx.post(f"{url}/v1/predict", files=[("files", ("x.png", b"text", "image/png"))])
        assert bad.status_code == 415
        assert bad.json()["detail"].startswith("file 0 ('x.png'): not an image")
        assert httpx.get(f"{url}/v1/model").json()["name"] == "digits-serving-test"
        maps = Path(f"/proc/{server.process.pid}/maps")
        if maps.exists():  # Linux: the server process has no torch library mapped
            assert "libtorch" not in maps.read_text()


def test_serving_never_imports_torch(image_bundle: Path, digit_images: list[DigitImage]) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from fastapi.testclient import TestClient
        import mlfactory.cli, mlfactory.serving.run
        from mlfactory.serving.app import create_app

        bundle, image = sys.argv[1], Path(sys.argv[2])
        with TestClient(create_app(bundle)) as client:
            files = [("files", (image.name, image.read_bytes(), "image/png"))]
            assert client.post("/v1/predict", files=files).status_code == 200
        leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith(
            ("torch.", "mlfactory.training", "lightning", "timm")))
        print("leaked:", leaked)
        sys.exit(1 if leaked else 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(image_bundle), str(digit_images[0].path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def serve_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`mlfactory serve ARGS` in a process of its own, for the commands that must not start."""
    return subprocess.run(
        [sys.executable, "-m", "mlfactory.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(),
        check=False,
    )


def test_serve_on_a_wrong_path_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_bundle"
    result = serve_command(str(missing), "--port", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {missing}: no such bundle folder or run folder, not an MLflow run id (32 hex "
        "digits) and not a registered model (models:/NAME/VERSION or models:/NAME@ALIAS)"
    ]


def test_serve_of_a_truncated_model_fails_at_start_up_in_one_line(tmp_path: Path) -> None:
    truncated = next(c for c in CORRUPTIONS if c.name == "truncated model.onnx")
    bundle = corrupt_copy(tiny_bundle(tmp_path / "good", "image"), tmp_path / "b", truncated)
    result = serve_command(str(bundle), "--port", str(free_port()))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "cannot be loaded by ONNX Runtime" in lines[0]
    assert "Uvicorn running" not in result.stdout + result.stderr


def test_a_port_another_server_holds_is_one_line_before_the_model_loads(
    image_bundle: Path, tmp_path: Path
) -> None:
    """uvicorn would load the model, log its own error and exit with code 3."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):  # listening: another server
        result = serve_command(str(image_bundle), "--port", str(port))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --host 127.0.0.1 --port {port}: cannot listen: Address already in use: "
        "another server is listening there; choose another --port"
    ]
    assert "serving digits-serving-test" not in result.stdout + result.stderr  # not loaded


def test_an_address_that_is_not_this_machines_is_one_line() -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to a machine.
    with pytest.raises(ConfigError, match=r"^--host 192\.0\.2\.1 --port \d+: cannot listen: "):
        check_can_listen("192.0.2.1", free_port())
    check_can_listen("127.0.0.1", free_port())  # a free loopback port is fine


def test_run_server_checks_the_bundle_before_starting(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text("{}")
    with pytest.raises(BundleError, match="incomplete bundle"):
        run_server(tmp_path, port=free_port())


def test_factory_needs_the_bundle_variable(
    image_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    with pytest.raises(BundleError, match=f"{BUNDLE_ENV} is not set"):
        app_from_env()
    monkeypatch.setenv(BUNDLE_ENV, str(image_bundle))
    assert app_from_env().title.endswith("digits-serving-test")


def test_serve_with_a_bad_log_url_is_one_line(image_bundle: Path) -> None:
    env = {**server_env(), "MLFACTORY_LOG_URL": "nosuchdb://host/db"}
    result = subprocess.run(
        [sys.executable, "-m", "mlfactory.cli", "serve", str(image_bundle), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: MLFACTORY_LOG_URL: 'nosuchdb://host/db' names an unknown database"
    ]


def test_workers_default_to_the_setting(
    image_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.delenv(BUNDLE_ENV, raising=False)  # run_server sets it; restored afterwards
    monkeypatch.setenv("MLFACTORY_WORKERS", "3")
    monkeypatch.setenv("MLFACTORY_LOG_URL", f"sqlite:///{tmp_path / 'p.db'}")
    run_server(image_bundle, port=free_port())
    run_server(image_bundle, port=free_port(), workers=2)
    assert [call["workers"] for call in calls] == [3, 2]
    assert (tmp_path / "p.db").is_file()  # the log was opened (and its table made) up front


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3"])
def test_a_server_others_can_reach_warns_of_open_reports(host: str) -> None:
    warning = open_endpoints_warning(host, ServingSettings())
    if host in ("0.0.0.0", "10.1.2.3"):
        assert warning is not None and f"--host {host}: anyone" in warning
        assert warning.endswith("set MLFACTORY_MONITOR_TOKEN to guard them")
    else:
        assert warning is None
    assert open_endpoints_warning(host, ServingSettings(monitor_token="a-long-token")) is None


def test_serve_prints_the_warning_at_start(
    image_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    monkeypatch.delenv("MLFACTORY_MONITOR_TOKEN", raising=False)
    monkeypatch.setenv("MLFACTORY_LOG_URL", f"sqlite:///{tmp_path / 'p.db'}")
    run_server(image_bundle, host="0.0.0.0", port=free_port())
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"warning: {open_endpoints_warning('0.0.0.0', ServingSettings())}"]
    run_server(image_bundle, host="127.0.0.1", port=free_port())
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MLFACTORY_MAX_REQUEST_BYTES", "1048576")
    run_server(image_bundle, host="127.0.0.1", port=free_port())
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: MLFACTORY_MAX_UPLOAD_BYTES=10485760 is above ")
