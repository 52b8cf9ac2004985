"""A real server under bounded concurrent load: no failed request, no lost prediction.

- 15 s of load: every request answered, every answer in the prediction log, batches formed,
  and the idle server afterwards uses (almost) no CPU.
- `kill -9` under load, restart on the same log: every prediction that was answered is there.
- hot reloads under load: no request fails, and answers come from both model versions.

All load stays on 127.0.0.1 and is capped in time and in requests. Nothing here asserts speed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from mlfactory.serving.prediction_log import PredictionLog

from .conftest import DigitImage
from .live_server import live_server, start_server
from .load import BackgroundLoad
from .tiny_bundles import copy_with_version

TOKEN = "load-test-admin-token"
LOAD_SECONDS = 15.0
IDLE_SECONDS = 3.0


def payloads(digits: list[DigitImage]) -> list[list[tuple[str, bytes]]]:
    """One-file requests of each digit, and a few two-file ones."""
    single = [[(d.path.name, d.read_bytes())] for d in digits]
    return single + [single[i] + single[i + 1] for i in range(0, 8, 2)]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime in clock ticks


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


@pytest.mark.slow
def test_sustained_load_fails_nothing_and_logs_everything(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    with live_server(image_bundle, tmp_path, log_url=log_url) as server:
        with BackgroundLoad(server.url, payloads(digit_images), max_seconds=LOAD_SECONDS) as load:
            result = load.finish()
        assert result.failed == [], result.failed[:5]
        assert len(result.answered) > 0
        metrics = httpx.get(f"{server.url}/metrics").text
        batches = metric(metrics, "mlfactory_batch_size_count")
        inputs = metric(metrics, "mlfactory_batch_size_sum")
        assert inputs > batches  # concurrent requests shared model calls
        assert metric(metrics, "mlfactory_queue_depth") == 0
        if Path(f"/proc/{server.process.pid}/stat").exists():  # Linux: no busy loop when idle
            before = cpu_seconds(server.process.pid)
            time.sleep(IDLE_SECONDS)
            assert cpu_seconds(server.process.pid) - before < 0.25 * IDLE_SECONDS
    logged = {row.request_id for row in PredictionLog(log_url).read()}
    assert {outcome.request_id for outcome in result.answered} <= logged


@pytest.mark.slow
def test_every_answered_prediction_survives_kill_9(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    server = start_server(image_bundle, tmp_path, log_url=log_url)
    try:
        with BackgroundLoad(server.url, payloads(digit_images), max_seconds=60) as load:
            load.wait_for_answers(100)
            server.kill()  # with requests in flight and rows waiting for their commit
            result = load.stop()
    finally:
        server.stop()
    answered = {outcome.request_id for outcome in result.answered}
    assert len(answered) >= 100
    # Only requests cut off by the kill may fail, and only without an answer.
    assert all(outcome.status is None for outcome in result.failed)
    with live_server(image_bundle, tmp_path, log_url=log_url) as restarted:
        files = [("files", ("d.png", digit_images[0].read_bytes(), "image/png"))]
        after = httpx.post(f"{restarted.url}/v1/predict", files=files, timeout=60)
        assert after.status_code == 200, after.text
    logged = {row.request_id for row in PredictionLog(log_url).read()}
    missing = answered - logged
    assert not missing, f"{len(missing)} answered predictions are not in the log"
    assert after.json()["request_id"] in logged


@pytest.mark.slow
def test_reloads_under_load_fail_no_request(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    next_bundle = copy_with_version(image_bundle, tmp_path / "next", "0.0.2")
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with live_server(image_bundle, tmp_path, log_url=log_url, admin_token=TOKEN) as server:
        with BackgroundLoad(server.url, payloads(digit_images), max_seconds=60) as load:
            load.wait_for_answers(20)
            for target in (next_bundle, image_bundle, tmp_path / "missing", next_bundle):
                response = httpx.post(
                    f"{server.url}/v1/admin/reload",
                    headers=auth,
                    json={"bundle": str(target)},
                    timeout=60,
                )
                assert response.status_code == (422 if target.name == "missing" else 200)
                seen = len(load.result.answered)
                load.wait_for_answers(seen + 20)
            result = load.stop()
        assert httpx.get(f"{server.url}/v1/model").json()["version"] == "0.0.2"
    assert result.failed == [], result.failed[:5]
    versions = [outcome.model_version for outcome in result.answered]
    assert set(versions) == {"0.0.1", "0.0.2"}
    assert versions[-1] == "0.0.2"
    rows = PredictionLog(log_url).read()
    assert {row.model_version for row in rows} == {"0.0.1", "0.0.2"}
