"""Run a test server (an S3, GCS or Azure Blob emulator) in its own process on a free loopback
port: wait until it listens, stop it afterwards. Its output goes to a log that a failed start
quotes."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlfactory.serving.process import HOST
from tests.conftest import untraced_env

START_TIMEOUT_S = 60


def _wait_until_listening(name: str, port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"{name} exited with {server.returncode}: {log.read_text()}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{name} did not listen on {HOST}:{port} in {START_TIMEOUT_S} s")


@contextmanager
def local_server(name: str, command: list[str], port: int, log: Path) -> Iterator[None]:
    """Start `command` (which must listen on HOST:`port`), yield once it listens, then stop it."""
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=untraced_env()
        )
    try:
        _wait_until_listening(name, port, server, log)
        yield
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
