"""Start, watch and stop the benchmarked servers and the load generator, each its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from mlfactory.serving.process import free_port

PYTHON = sys.executable
HOST = "127.0.0.1"
__all__ = ["HOST", "PYTHON", "Server", "free_port", "start_server"]


@dataclass
class Server:
    """A server process (its own session, so its workers can be stopped with it)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def predict_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/predict"

    @property
    def health_url(self) -> str:
        return f"http://{HOST}:{self.port}/health"

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until `/health` answered 200.

        Raises:
            RuntimeError: the process exited or did not answer within `timeout_s`.
        """
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process and all its descendants."""
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 20 s."""
        if self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def start_server(
    name: str, command: list[str], log_dir: Path, env: dict[str, str] | None = None
) -> Server:
    """Start `command` (it must take the port as its last argument) on a free port."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [*command, str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    log_file.close()
    return Server(name, process, port, log_path)


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine spent busy so far (all cores, idle excluded)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def busy_cores(seconds: float) -> float:
    """Average cores busy machine-wide over the next `seconds` (this sleeps meanwhile)."""
    before, started = machine_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / (time.perf_counter() - started)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its live descendants."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def idle_cores(server: Server, seconds: float) -> float:
    """Average CPU cores the server uses while nothing is sent to it."""
    before, started = server.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (server.cpu_seconds() - before) / (time.perf_counter() - started)


def run_load(
    server: Server,
    images: Path,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    unique: bool = False,
) -> dict[str, Any]:
    """One closed-loop load run from a separate client process (which also times server CPU);
    `unique` makes every request's bytes differ (benchmarks/serving/load.py)."""
    command = [
        PYTHON,
        "-m",
        "benchmarks.serving.load",
        "--url",
        server.predict_url,
        "--images",
        str(images),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration_s),
        "--max-requests",
        str(max_requests),
        "--server-pid",
        str(server.process.pid),
        *(["--unique"] if unique else []),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 180, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
