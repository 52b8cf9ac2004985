"""How signals end a command: SIGTERM as an exception, for a command that holds temporary
files; Ctrl-C once a command is done, at once.

A `kill`, or a container stopped, sends SIGTERM, whose default action ends the process at once:
no `finally`, no context manager's exit, no exit handler (`atexit`) runs, and the folders a
command fetched models into are left behind. `exit_on_sigterm` makes it raise SystemExit
instead, as Ctrl-C raises KeyboardInterrupt, so that they run.
"""

from __future__ import annotations

import signal
import threading


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
