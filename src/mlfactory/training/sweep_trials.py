"""A worker's trials, one after another, with Optuna's ask-and-tell interface: each trial it
creates is known to it before a signal can stop it, and a worker that stops fails its own
trials that are still running.

Optuna's `study.optimize` creates a trial in the storage (`study.ask`) before the objective
runs. A SIGTERM or Ctrl-C at that moment would stop the worker between the two, and leave the
trial RUNNING in the storage until a later worker's heartbeat check failed it, without a reason
(its first heartbeat is written as it is made: `sweep_study.HeartbeatFromCreation`). Here the
trial is created with those signals held (`termination.signals_held`) until it is in the
worker's list, and whatever stops the worker afterwards (a signal in the sampler, in the
training or in recording the result, or an error), `fail_unfinished` marks each of its trials
still RUNNING failed, with the reason, through `study.tell`, as Optuna's own loop does.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import optuna

# Private, and what `study.optimize` uses: Optuna writes heartbeats only inside `optimize` and
# has no public heartbeat for ask-and-tell (optuna/optuna#3293). Pinned with optuna==5.0.0;
# tests/training/test_sweep_workers.py fails if an upgrade moves or changes it.
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState

from mlfactory.termination import signals_held


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    trials: int,
    timeout: float | None,
    catch: tuple[type[Exception], ...],
    created: list[optuna.Trial],
) -> None:
    """Run `trials` trials, as `study.optimize(objective, trials, timeout, catch)` does: none
    started after `timeout` seconds, a trial whose objective raises one of `catch` failed and
    the next one started, each trial's heartbeat written while it runs, and stale trials of
    dead workers failed before each new one. Each trial created is appended to `created`.

    Raises:
        BaseException: what the objective raised (but `optuna.TrialPruned` and `catch`), or a
            signal's exception; the trial it stopped is left to `fail_unfinished`.
    """
    started = time.monotonic()
    for _ in range(trials):
        if timeout is not None and time.monotonic() - started >= timeout:
            return
        with warnings.catch_warnings():
            # Heartbeats are "experimental", and `ask` outside `optimize` warns of them.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            optuna.storages.fail_stale_trials(study)
            with signals_held():  # the trial is in `created` before a signal can stop this
                trial = study.ask()
                created.append(trial)
        with get_heartbeat_thread(trial._trial_id, study._storage):
            state: TrialState | None = None  # complete, or failed for a value such as NaN
            try:
                value: float | None = objective(trial)
            except optuna.TrialPruned:
                state, value = TrialState.PRUNED, None
            except catch:
                state, value = TrialState.FAIL, None
        with warnings.catch_warnings():  # as in `optimize`, without a warning
            warnings.simplefilter("ignore", UserWarning)
            study.tell(trial, value, state)


def fail_unfinished(study: optuna.Study, created: list[optuna.Trial], reason: str) -> None:
    """Mark each trial of `created` that the storage still holds as RUNNING failed, with
    `reason` as its `error` unless it has one (`sweep_failures.record_failure` gives the
    reason of a trial its training stopped).

    Raises:
        Exception: the storage does not answer (the trial is then failed by a later worker's
            heartbeat check, once its heartbeats have stopped).
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for trial in created:
        if trial.number not in running:
            continue
        if "error" not in trial.user_attrs:
            trial.set_user_attr("error", reason)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
