"""How a sweep's trial that does not finish is recorded: its reason in one line (the table
lists it), its MLflow run kept and ended, and how a SIGTERM or Ctrl-C stops the sweep.

A SIGTERM (`kill`, a container or a job stopped) fails the running trial with the reason
"terminated (SIGTERM)" and marks its MLflow run KILLED, whenever it comes (while Optuna makes
the trial too: `sweep_trials`); the command says so in one line and exits with 143. A worker
killed outright (SIGKILL, its machine gone) cannot say anything: its trial stays RUNNING until
its heartbeats stop for the study's grace period, after which the next worker that starts a
trial fails it (`sweep_study.HEARTBEAT_GRACE_S`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import optuna

from mlfactory import tracking
from mlfactory.errors import Interrupted, Terminated, first_line
from mlfactory.tracking import without_secrets
from mlfactory.training.sweep_parent import best_effort

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 143
TERMINATED = "terminated (SIGTERM)"
INTERRUPTED = "interrupted (Ctrl-C)"
# What a failed trial without a recorded reason is: its worker stopped without a word, and a
# later worker failed it once its heartbeats had stopped.
NO_REASON = "its worker stopped without a word (killed, or its machine went away)"
URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"<>]+")


def is_sigterm(exc: BaseException) -> bool:
    """Whether `exc`, or what it was raised from or while handling, is SIGTERM's SystemExit
    (`termination.exit_on_sigterm`, or Lightning's SIGTERMException during a fit, which the
    training turns into an interruption) or a `Terminated`."""
    seen: BaseException | None = exc
    for _ in range(20):  # a chain of exceptions is short; never a loop
        if seen is None:
            return False
        if isinstance(seen, Terminated) or type(seen).__name__ == "SIGTERMException":
            return True
        if isinstance(seen, SystemExit) and seen.code == SIGTERM_EXIT_CODE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def record_failure(
    trial: optuna.Trial, exc: BaseException, folder: Path, client: Any
) -> BaseException:
    """Record why `trial` did not finish and end its MLflow run (KILLED when stopped, as the
    training marks a failed one FAILED); the exception to raise for it: a `Terminated`
    for SIGTERM (Optuna fails the trial for an Exception, and leaves it RUNNING for a
    SystemExit), else `exc`."""
    terminated = is_sigterm(exc)
    reason = stop_reason(exc)
    best_effort(trial.set_user_attr, "error", reason)
    run_id = keep_run_id(trial, folder)
    if run_id and (terminated or reason == INTERRUPTED):
        best_effort(client.set_terminated, run_id, "KILLED")
    if terminated:
        return Terminated(TERMINATED)
    if not isinstance(exc, Exception | KeyboardInterrupt):
        log.info("sweep: trial %d stopped: %s", trial.number, reason)
    return exc


def stop_reason(exc: BaseException) -> str:
    """Why `exc` stopped a trial, in one line: `TERMINATED`, `INTERRUPTED`, or its type and
    first line (`one_line_reason`)."""
    if is_sigterm(exc):
        return TERMINATED
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        return INTERRUPTED
    return one_line_reason(exc)


def keep_run_id(trial: optuna.Trial, folder: Path) -> str | None:
    """The MLflow run the trial's training started (from its run folder), recorded on the trial
    for the table; None when it started none."""
    state = tracking.load_run_state(folder) or {}
    run_id = state.get("mlflow_run_id")
    if run_id:
        best_effort(trial.set_user_attr, "mlflow_run_id", run_id)
    return str(run_id) if run_id else None


def one_line_reason(exc: BaseException) -> str:
    """`Type: first line of the message`, with the credentials of any URL in it masked."""
    text = f"{type(exc).__name__}: {first_line(exc)}"
    return URL.sub(lambda url: str(without_secrets(url.group(0))), text)
