"""deploy/locust/locustfile.py: Locust's load against a real `mlfactory serve`, bounded in
requests and time, every answer checked and every request counted by the server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import untraced_env
from ..test_registry_safety import refusing_server
from .conftest import DigitImage
from .live_server import free_port, live_server
from .tiny_bundles import tiny_bundle

LOCUSTFILE = Path(__file__).parents[2] / "deploy" / "locust" / "locustfile.py"
REUTERS = Path(__file__).parents[1] / "fixtures" / "text" / "reuters_r8_sample.jsonl"
MAX_REQUESTS = 40
RUN_TIME = "60s"  # the bound if the request cap were never reached

__all__ = ["refusing_server"]  # a server that answers 401 to every API call


def run_locust(host: str, inputs: Path, out: Path, *options: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """Locust, headless, 4 users, as a user runs it against a deployment."""
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", host,
        "--inputs", str(inputs), "--headless", "--users", "4", "--spawn-rate", "4",
        "--run-time", RUN_TIME, "--max-requests", str(MAX_REQUESTS), "--only-summary", "--json",
        *options,
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=out, env=untraced_env()
    )


def predict_stats(result: subprocess.CompletedProcess) -> dict[str, Any]:  # type: ignore[type-arg]
    """Locust's final stats of `POST /v1/predict` (its `--json` output)."""
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    return rows["/v1/predict"]  # type: ignore[no-any-return]


def predictions_answered(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    name = 'mlfactory_http_requests_total{endpoint="/v1/predict",method="POST",status="200"}'
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_locust_posts_real_digits_until_its_request_cap(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    folder = digit_images[0].path.parent
    with live_server(image_bundle, tmp_path) as server:
        result = run_locust(server.url, folder, tmp_path, "--per-request", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        stats = predict_stats(result)
        assert stats["num_requests"] == MAX_REQUESTS and stats["num_failures"] == 0
        assert predictions_answered(server.url) == MAX_REQUESTS  # none lost, none extra


@pytest.mark.slow
def test_locust_sends_texts_to_a_text_model(tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n".join(json.loads(line)["text"] for line in REUTERS.read_text().splitlines())
    )
    bundle = tiny_bundle(tmp_path / "bundle", "text")
    with live_server(bundle, tmp_path) as server:
        result = run_locust(server.url, texts, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        stats = predict_stats(result)
        assert stats["num_requests"] == MAX_REQUESTS and stats["num_failures"] == 0
        assert predictions_answered(server.url) == MAX_REQUESTS


def test_inputs_that_do_not_fit_the_model_stop_locust_in_one_line(
    image_bundle: Path, tmp_path: Path
) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("a text, not an image folder\n")
    with live_server(image_bundle, tmp_path) as server:
        result = run_locust(server.url, texts, tmp_path)
    assert result.returncode != 0
    assert f"error: --inputs {texts}: an image model needs a folder of files" in result.stderr


def test_a_host_that_serves_no_model_stops_locust_in_one_line(
    refusing_server: str, tmp_path: Path
) -> None:
    """Locust's first request asks the host what it serves: a host that is down, or one that
    wants credentials, is one `error:` line, not a traceback."""
    closed = f"http://127.0.0.1:{free_port()}"
    result = run_locust(closed, tmp_path, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"error: --host {closed}: {closed}/v1/model cannot be reached: " in result.stderr
    login = refusing_server.replace("mlf:s3cret@", "")  # 401 on every call but /health
    result = run_locust(login, tmp_path, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"error: --host {login}: {login}/v1/model answers 401: " in result.stderr
