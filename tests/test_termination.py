"""How signals end a command: SIGTERM as Ctrl-C for a command that stops its own work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


SWALLOWED = """
import gc, os, signal, sys, time, weakref
from mlfactory.termination import exit_on_sigterm, redeliver_swallowed_signals
exit_on_sigterm()
if sys.argv[1] == "redeliver":
    redeliver_swallowed_signals()

class Thing:
    pass

def collected(_ref):  # runs inside the collection: Python drops what it raises
    os.kill(os.getpid(), signal.{name})
    for _ in range(1000):
        pass

thing = Thing()
ref = weakref.ref(thing, collected)
del thing
gc.collect()
time.sleep(0.5)  # where the signal is checked again
print("went on")
"""


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", -signal.SIGINT)])
def test_a_signal_raised_in_a_collection_callback_is_not_lost(name: str, code: int) -> None:
    """SIGTERM or Ctrl-C landing in a weakref callback (where a sweep's SIGTERM was once lost,
    the trial then trained to its end): Python drops the exception; it is sent again."""
    script = SWALLOWED.replace("{name}", name)
    for mode, stops in (("as-python-does", False), ("redeliver", True)):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60
        )
        assert ("went on" not in done.stdout) is stops, done.stdout + done.stderr
        if stops:
            assert done.returncode == code and "Exception ignored" not in done.stderr


HELD = """
import os, signal, sys, time
from mlfactory.termination import exit_on_sigterm, signals_held
exit_on_sigterm()
signum = getattr(signal, sys.argv[1])
try:
    with signals_held():
        for _ in range(int(sys.argv[2])):
            os.kill(os.getpid(), signum)
            time.sleep(0.2)  # where a handler would have run
        print("block ended", flush=True)
finally:
    print("handlers", signal.getsignal(signal.SIGTERM).__name__,
          signal.getsignal(signal.SIGINT).__name__, flush=True)
"""


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", -signal.SIGINT)])
def test_a_held_signal_stops_the_process_once_the_block_ends(name: str, code: int) -> None:
    """One SIGTERM or Ctrl-C in the block: the block runs to its end, then the signal stops
    the process as it would have (exit code 143; a KeyboardInterrupt, which Python ends as
    SIGINT does), the handlers restored.
    A second one while held stops the block at once."""
    for signals, ended in ((1, True), (2, False)):
        done = subprocess.run(
            [sys.executable, "-c", HELD, name, str(signals)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert ("block ended" in done.stdout) is ended, done.stdout + done.stderr
        assert "handlers _terminated default_int_handler" in done.stdout, done.stdout
        if name == "SIGINT":
            assert done.stderr.strip().endswith("KeyboardInterrupt"), done.stderr
