"""Metrics that are true across worker processes: `mlfactory serve --workers 2`, real digits.

Each worker counts what it answers in its own files; every scrape, whichever worker answers it,
merges them. A worker killed with `kill -9` keeps its counts and loses its live gauges.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.multiprocess import MultiProcessCollector

from mlfactory.errors import ConfigError
from mlfactory.serving.multiprocess_metrics import (
    MULTIPROC_ENV,
    metrics_dir,
    prune_dead_workers,
)

from .conftest import DigitImage, png_bytes
from .live_server import live_server

PREDICT_OK = 'mlfactory_http_requests_total{endpoint="/v1/predict",method="POST",status="200"}'
MAX_REQUESTS = 200


def sample(text: str, name: str) -> float:
    """The value of one sample line of an exposition."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def predictions_by_pid(folder: Path) -> dict[int, float]:
    """Answered predict requests per worker process, read from each worker's own file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(path)]):
            for s in metric.samples:
                if s.name == "mlfactory_http_requests_total" and s.labels == {
                    "endpoint": "/v1/predict",
                    "method": "POST",
                    "status": "200",
                }:
                    counts[pid] = s.value
    return counts


def resident_memory_by_pid(text: str) -> dict[int, float]:
    """`process_resident_memory_bytes` of each worker a scrape shows."""
    found = re.findall(r'^process_resident_memory_bytes\{pid="(\d+)"\} (\S+)$', text, re.MULTILINE)
    return {int(pid): float(value) for pid, value in found}


def predict(url: str, digit: DigitImage) -> None:
    # A new connection per request: uvicorn's workers share the socket, any may accept it.
    files = [("files", (digit.path.name, digit.read_bytes(), "image/png"))]
    response = httpx.post(f"{url}/v1/predict", files=files, timeout=30.0)
    assert response.status_code == 200, response.text


def test_n_requests_show_as_n_whichever_worker_answers(
    image_bundle: Path,
    digit_images: list[DigitImage],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left over from an earlier server")
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    with live_server(image_bundle, tmp_path, "--workers", "2") as server:
        assert not (folder / "counter_999999.db").exists()  # each start begins from nothing
        sent = 0
        with ThreadPoolExecutor(4) as pool:
            # Until both workers have answered some (bounded): bursts of concurrent requests.
            while len(predictions_by_pid(folder)) < 2 and sent < MAX_REQUESTS:
                burst = [digit_images[(sent + i) % len(digit_images)] for i in range(8)]
                list(pool.map(lambda digit: predict(server.url, digit), burst))
                sent += len(burst)
        per_worker = predictions_by_pid(folder)
        assert len(per_worker) == 2, f"one worker answered all {sent} requests: {per_worker}"
        assert sum(per_worker.values()) == sent
        for _ in range(6):  # new connections: the scrapes land on either worker
            text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
            assert sample(text, PREDICT_OK) == sent
            assert sample(text, "mlfactory_batch_size_sum") == sent
            assert sample(text, 'mlfactory_predictions_total{label="0"}') >= 0
            assert sample(text, "mlfactory_queue_depth") == 0
            info = (
                'mlfactory_model_info{modality="image",name="digits-serving-test",version="0.0.1"}'
            )
            assert sample(text, info) == 1
            # Each worker's own process metrics, whichever answers (Linux: from /proc).
            memory = resident_memory_by_pid(text)
            assert set(memory) == set(per_worker)
            assert all(50e6 < rss < 4e9 for rss in memory.values()), memory
            assert re.search(r'^process_cpu_seconds_total\{pid="\d+"\} ', text, re.MULTILINE)

        victim = min(per_worker)
        assert f"gauge_livesum_{victim}.db" in os.listdir(folder)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # uvicorn notices, reaps it and starts another
            text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
            if f"gauge_livesum_{victim}.db" not in os.listdir(folder):
                break
            time.sleep(0.5)
        assert f"gauge_livesum_{victim}.db" not in os.listdir(folder)
        assert f"counter_{victim}.db" in os.listdir(folder)  # what it answered stays counted
        assert sample(text, PREDICT_OK) == sent
        assert sample(text, "mlfactory_queue_depth") == 0
        assert victim not in resident_memory_by_pid(text)


# A worker's live gauge, written as a worker writes it (prometheus-client in multiprocess mode),
# then the worker busy until it is killed.
WORKER_WITH_A_LIVE_GAUGE = """
import time
from prometheus_client import Gauge
Gauge("mlfactory_queue_depth", "queued", multiprocess_mode="livesum").set(3)
time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process states come from /proc")
def test_a_killed_worker_not_yet_reaped_loses_its_live_gauges(tmp_path: Path) -> None:
    # On a loaded machine uvicorn's supervisor can take many seconds to reap a worker killed
    # with `kill -9`; until then the worker is a zombie, which still answers signal 0.
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER_WITH_A_LIVE_GAUGE], env=env)
    gauge, stat = tmp_path / f"gauge_livesum_{worker.pid}.db", Path(f"/proc/{worker.pid}/stat")
    try:
        deadline = time.monotonic() + 60
        while not gauge.exists():
            assert worker.poll() is None and time.monotonic() < deadline, "no gauge written"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":  # exited, not reaped
            assert time.monotonic() < deadline, "the worker did not exit"
            time.sleep(0.05)
        os.kill(worker.pid, 0)  # no error: to signal 0, a zombie is a process
        assert prune_dead_workers(tmp_path) == [worker.pid]
        assert not list(tmp_path.glob(f"gauge_live*_{worker.pid}.db"))
    finally:
        worker.kill()
        assert worker.wait(timeout=10) == -signal.SIGKILL


def test_decode_gauges_add_up_the_workers_and_return_to_zero(
    image_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One decode slot per worker, 12 large images at once: a scrape, whichever worker answers
    it, shows both workers' decodes and waits as one series each, never more decoding than the
    2 slots, and 0 of both once every request is answered."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "metrics"))
    large = png_bytes(Image.new("RGBA", (3000, 3000), (200, 30, 30, 128)))  # ~80 MiB decoded
    names = ("mlfactory_decodes_in_progress", "mlfactory_decodes_waiting")
    with live_server(
        image_bundle, tmp_path, "--workers", "2", max_concurrent_decodes="1"
    ) as server:

        def post(index: int) -> int:
            files = [("files", (f"large-{index}.png", large, "image/png"))]
            return httpx.post(f"{server.url}/v1/predict", files=files, timeout=60.0).status_code

        seen = []
        with ThreadPoolExecutor(12) as pool:
            posts = [pool.submit(post, index) for index in range(12)]
            while not all(future.done() for future in posts):
                text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
                seen.append(tuple(sample(text, name) for name in names))
        assert [future.result() for future in posts] == [200] * 12
        assert max(decoding for decoding, _ in seen) <= 2, seen  # 2 workers x 1 slot
        assert max(waiting for _, waiting in seen) >= 1, seen
        for _ in range(4):  # new connections: either worker answers
            text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
            assert [sample(text, name) for name in names] == [0.0, 0.0]


def test_a_metrics_folder_is_made_for_workers_and_removed_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with metrics_dir(1) as none:
        assert none is None and MULTIPROC_ENV not in os.environ
    with metrics_dir(3) as folder:
        assert folder is not None and folder.is_dir()
        assert os.environ[MULTIPROC_ENV] == str(folder)
    assert not folder.exists() and MULTIPROC_ENV not in os.environ


def test_a_given_metrics_folder_is_emptied_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "gauge_livesum_12.db").write_bytes(b"old")
    (given / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    with metrics_dir(1) as folder:
        assert folder == given
        assert sorted(p.name for p in given.iterdir()) == ["notes.txt"]
    assert given.is_dir() and os.environ[MULTIPROC_ENV] == str(given)


def test_no_writable_metrics_folder_is_one_line_saying_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a read-only root file system (Kubernetes' readOnlyRootFilesystem) without /tmp."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(blocker))
    with pytest.raises(ConfigError) as refused, metrics_dir(2):
        pass
    assert str(refused.value).startswith("--workers 2: the workers share their metrics in files")
    assert f"set {MULTIPROC_ENV} to a writable folder" in str(refused.value)
    monkeypatch.setenv(MULTIPROC_ENV, str(blocker / "metrics"))
    given = f"^{MULTIPROC_ENV}={blocker}/metrics: the workers"
    with pytest.raises(ConfigError, match=given), metrics_dir(2):
        pass
