"""A real `mlfactory serve` process on 127.0.0.1, for the tests that need one over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

STARTUP_TIMEOUT_S = 60.0


@dataclass
class LiveServer:
    """A running server: its URL, process and output file."""

    url: str
    process: subprocess.Popen[bytes]
    output: Path

    def kill(self) -> None:
        """`kill -9`: no shutdown hook, no flush, nothing runs after it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), killing the process if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def server_env(**settings: str) -> dict[str, str]:
    """This environment without any `MLFACTORY_*` variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFACTORY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({f"MLFACTORY_{name.upper()}": value for name, value in settings.items()})
    return env


def start_server(bundle: Path, workdir: Path, **settings: str) -> LiveServer:
    """Start `mlfactory serve` on a free port and wait until `/health` answers.

    Args:
        bundle: the bundle to serve.
        workdir: the server's working directory; its output goes to `server-<port>.log` there.
        settings: `ServingSettings` fields, passed as `MLFACTORY_*` variables.
    """
    port = free_port()
    output = workdir / f"server-{port}.log"
    command = [sys.executable, "-m", "mlfactory.cli", "serve", str(bundle)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=server_env(**settings), cwd=workdir
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, output)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{output.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    pytest.fail(f"server not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{output.read_text()}")


@contextmanager
def live_server(bundle: Path, workdir: Path, **settings: str) -> Iterator[LiveServer]:
    """`start_server`, stopped on exit whatever happens."""
    server = start_server(bundle, workdir, **settings)
    try:
        yield server
    finally:
        server.stop()
