"""`mlfactory ui` as a real process: stopping it stops the Streamlit it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlfactory.serving.process import HOST, ServerProcess, free_port
from mlfactory.ui.launch import HEALTH_PATH
from tests.ui.browser import WAIT_S


def children(pid: int) -> list[int]:
    """The processes `pid` started (Linux: /proc)."""
    listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in listed]


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, exited but not waited for, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still {what} after {WAIT_S:.0f} s"
        time.sleep(0.2)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_stopping_the_ui_stops_streamlit(signum: int, code: int, tmp_path: Path) -> None:
    """SIGTERM (a service manager, `kill`) or SIGINT (Ctrl-C) to `mlfactory ui` reaches its
    Streamlit child, which stops serving its port; `mlfactory ui` waits for it, then exits
    (130 and "interrupted" after Ctrl-C)."""
    port = free_port()
    api = f"http://{HOST}:{free_port()}"  # no server there: the UI starts all the same
    command = [sys.executable, "-m", "mlfactory.cli", "ui", "--api", api, "--port", str(port)]
    output = tmp_path / "ui.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    ui = ServerProcess(f"http://{HOST}:{port}", process, output, health_path=HEALTH_PATH)
    streamlit: list[int] = []
    try:
        ui.wait_healthy(60)
        streamlit = children(process.pid)
        assert len(streamlit) == 1
        process.send_signal(signum)
        assert process.wait(timeout=WAIT_S) == code, ui.output_tail()
        wait_until(lambda: not alive(streamlit[0]), "running")
        wait_until(lambda: not listening(port), "listening")
        if signum == signal.SIGINT:
            assert ui.output_tail(1) == "interrupted"
    finally:
        ui.kill()
        for pid in streamlit:  # left running by a UI that did not pass the signal on
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
