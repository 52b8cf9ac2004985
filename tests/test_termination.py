"""How signals end a command: SIGTERM as Ctrl-C for a command that stops its own work."""

from __future__ import annotations

import os
import signal
import time

import pytest
import typer

from mlfactory.cli.base import friendly_errors
from mlfactory.errors import Terminated
from mlfactory.termination import sigterm_as_ctrl_c


def test_sigterm_stops_the_block_as_ctrl_c_with_one_line_and_exit_code_143() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        terminated = pytest.raises(Terminated, match=r"^terminated \(SIGTERM\)$")
        with terminated as stopped, sigterm_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler runs before this ends
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():  # Ctrl-C: as it was
            raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGTERM, previous)

    @friendly_errors
    def command() -> None:
        raise stopped.value

    with pytest.raises(typer.Exit) as exited:
        command()
    assert exited.value.exit_code == 143  # as a shell reports a process SIGTERM ended
