"""How signals end a command: SIGTERM as an exception, for a command that holds temporary
files; Ctrl-C once a command is done, at once.

A `kill`, or a container stopped, sends SIGTERM, whose default action ends the process at once:
no `finally`, no context manager's exit, no exit handler (`atexit`) runs, and the folders a
command fetched models into are left behind. `exit_on_sigterm` makes it raise SystemExit
instead, as Ctrl-C raises KeyboardInterrupt, so that they run. `signals_held` keeps both
out of a step that must not be cut in two.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlfactory.errors import Interrupted, Terminated


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit (code 143, as a shell reports it) where nothing else
    handles it: in the main thread (the only one Python runs handlers in), unless a handler is
    set already. `serve`'s uvicorn handles SIGTERM while it serves and raises it again once it
    has stopped: here, that ends the command then."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_at_once_on_ctrl_c() -> None:
    """The command is done: a Ctrl-C while the libraries' exit handlers run (MLflow's, Lightning's)
    ends the process at once, instead of Python's "Exception ignored in atexit callback"
    traceback and the handlers going on."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM stops the block as Ctrl-C does (the server stopped, the MLflow run marked
    KILLED) and says so in one line starting `terminated (SIGTERM)`, where no other handler is
    set (the main thread only: Python runs handlers there alone).

    Raises:
        Terminated: SIGTERM arrived (exit code 143).
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    received: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as exc:
        if not received:
            raise
        said = str(exc).removeprefix("interrupted").lstrip("; ")
        raise Terminated("terminated (SIGTERM)" + (f"; {said}" if said else "")) from None
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM and Ctrl-C (SIGINT) until the block ends, then deliver them as they would
    have been: for a step a signal must not cut in two, such as a record made in a database and
    noted in memory (a sweep's new trial). A second signal while one is held is delivered at
    once, so that a step stuck on a storage that does not answer can still be stopped. The
    main thread only (Python runs handlers there alone): elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def hold(signum: int, _frame: object) -> None:
        if not held:
            held.append(signum)
            return
        held.clear()  # insisted on: this one stops the block now
        restore()
        signal.raise_signal(signum)

    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)  # known before `hold` can run
            signal.signal(signum, hold)
        yield
    finally:
        restore()
        if held:  # its handler runs in raise_signal, before it returns
            signal.raise_signal(held.pop())


def redeliver_swallowed_signals() -> None:
    """A SIGTERM or Ctrl-C whose exception Python had to drop (it was raised in a weakref or
    garbage-collection callback, or a destructor: "Exception ignored in ...") is sent again, so
    that it stops the command where it is next checked instead of being lost. The process's
    `sys.unraisablehook` does this, from a thread of its own a moment later (the signal's
    handler, run at once in the hook, would raise in it and be dropped again); other unraisable
    exceptions go to the hook as before."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, KeyboardInterrupt):
            again = signal.SIGINT
        elif isinstance(error, SystemExit) and error.code == 128 + signal.SIGTERM:
            again = signal.SIGTERM
        else:
            previous(unraisable)
            return
        _thread.start_new_thread(_send_soon, (again,))  # returns at once, waits for nothing

    sys.unraisablehook = hook


# How long after the hook returns a dropped signal is sent again (seconds).
REDELIVERY_DELAY_S = 0.05


def _send_soon(signum: int) -> None:
    time.sleep(REDELIVERY_DELAY_S)
    os.kill(os.getpid(), signum)
