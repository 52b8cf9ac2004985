"""Hyperparameter sweeps with Optuna: each trial a full training run of the recipe.

`run_sweep` samples the search space (`search_space`) with Optuna's TPE sampler, trains each
trial as `mlfactory train` would (its own run folder and bundle, its own MLflow run nested
under the sweep's run) and stops trials that fall behind the others' median at the same epoch
(Optuna's `MedianPruner`, through optuna-integration's Lightning callback).

A trial's value is the validation metric at the epoch whose weights went into its bundle (the
lowest validation loss): the number describes the bundle you would ship, and the test split
stays unseen until the bundle is evaluated.

The study lives in an Optuna storage (a SQLite file by default): running the command again
adds trials to the same study, and several machines pointed at one PostgreSQL storage run
trials of one study at once. Workers set the study up one at a time (`sweep_lock`), draw from
the recipe's seed and each trial's number (`sweep_sampler`), run their trials one after
another (`sweep_trials`), and fail a trial whose worker stopped, whenever it stopped
(`sweep_failures`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from mlfactory.config.loader import Recipe, load_recipe
from mlfactory.errors import ConfigError, DataError, Interrupted, Terminated
from mlfactory.mlflow_store import shown_url, tracking_client
from mlfactory.output import phase_log, said_once
from mlfactory.termination import exit_on_sigterm
from mlfactory.tracking import without_secrets
from mlfactory.training.backbones import check_backbone
from mlfactory.training.lightning_trainer import check_devices
from mlfactory.training.run_start import check_tracking_store
from mlfactory.training.search_space import SearchSpace, hydra_value
from mlfactory.training.sweep_failures import (
    NO_REASON,
    is_sigterm,
    keep_run_id,
    record_failure,
    stop_reason,
)
from mlfactory.training.sweep_lock import study_setup_lock
from mlfactory.training.sweep_parent import (
    best_effort,
    gone_store_error,
    parent_run,
    summarize_parent,
)
from mlfactory.training.sweep_study import (
    DEFAULT_STORAGE,
    check_out_path,
    check_study,
    claim_out,
    open_study,
    storage_url,
)
from mlfactory.training.sweep_trials import fail_unfinished, run_trials
from mlfactory.training.train import train

log = logging.getLogger(__name__)

# The metrics a trial can be judged by, and which way is better.
METRICS: dict[str, Literal["minimize", "maximize"]] = {
    "val/loss": "minimize",
    "val/acc": "maximize",
    "val/f1_macro": "maximize",
}
# What refuses a trial for the values it drew: failed, and the sweep goes on.
TRIAL_REFUSALS = (ConfigError, DataError)


@dataclass
class TrialOutcome:
    """One trial of the study, as the sweep's table shows it."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING
    params: dict[str, Any]
    value: float | None
    run_id: str | None = None
    bundle: str | None = None
    error: str | None = None


@dataclass
class SweepResult:
    """The study after this call: every trial (earlier calls' and other workers' too)."""

    study: str
    storage: str  # password hidden
    metric: str
    direction: str
    parent_run_id: str
    tracking_uri: str  # the MLflow store, without its credentials
    ran: int  # trials this worker ran in this call
    trials: list[TrialOutcome] = field(default_factory=list)
    best: TrialOutcome | None = None


def run_sweep(
    recipe_ref: str,
    space: SearchSpace,
    trials: int,
    out_dir: Path | None = None,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    metric: str = "val/loss",
    prune: bool = True,
    timeout: float | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SweepResult:
    """Run `trials` more trials of the recipe's study; see the module docstring.

    `pruner` replaces the default `MedianPruner` (with `prune`; e.g. a `PercentilePruner`).

    A trial the recipe or its data refuses for the values it drew (`TRIAL_REFUSALS`) is a
    failed trial, its reason kept in the study; the sweep goes on.

    Raises:
        ConfigError: a fixed or swept key the recipe refuses (any value of a choice; a
            backbone the family does not know), an unknown metric, a tracking
            store or a storage that cannot be opened (or stops answering), a study that judges
            trials by another metric or in the other direction or was started with other fixed
            overrides or another space, or an `out_dir` that is a file or holds another study's
            trials.
        Interrupted: Ctrl-C (the interrupted trial is marked failed; the rest stay).
        Terminated: SIGTERM (the same, exit code 143).
    """
    base = _checked_recipe(recipe_ref, space, metric)
    space = _one_device(space, base.config.trainer)
    name = study_name or f"{base.name}-sweep"
    out_dir = out_dir or Path("runs") / name
    check_out_path(out_dir)
    storage = storage_url(storage)
    if prune and pruner is None:
        pruner = optuna.pruners.MedianPruner()
    exit_on_sigterm()  # a stopped worker fails its trials instead of leaving them RUNNING
    # MLflow logs each database error with its traceback before raising it: a store that goes
    # away is said once, in the sweep's own line (`gone_store_error`).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    check_devices(base.config.trainer)
    tracking = base.config.tracking
    # Workers started together set the study up one at a time (its tables, its MLflow run).
    with study_setup_lock(storage, name):
        # A tracking store (or a device) that cannot be used is refused before the study's
        # storage is created.
        check_tracking_store(tracking)
        study = open_study(name, storage, METRICS[metric], pruner, base.config.seed)
        check_study(study, metric, METRICS[metric], space)
        claim_out(study, storage, out_dir)
        client = tracking_client(tracking)  # it answers, before any trial trains
        parent = parent_run(study, client, tracking, space, metric, METRICS[metric])

    def objective(trial: optuna.Trial) -> float:
        return _run_trial(trial, recipe_ref, space, out_dir, metric, prune, parent, client)

    # The data and its profile, the same for every trial unless the space changes them.
    with said_once("data: ", "warning: ", "monitoring: "):
        mine = _optimize(
            study, objective, trials, timeout, client, parent, (storage, tracking.tracking_uri)
        )
    best = _best(study)
    summarize_parent(client, parent, best)
    return SweepResult(
        study=name,
        storage=shown_url(storage),
        metric=metric,
        direction=METRICS[metric],
        parent_run_id=parent,
        tracking_uri=without_secrets(tracking.tracking_uri),
        ran=len(mine),
        trials=[_outcome(t) for t in study.trials],
        best=None if best is None else _outcome(best),
    )


def _checked_recipe(recipe_ref: str, space: SearchSpace, metric: str) -> Recipe:
    """The recipe with the fixed overrides, once it takes every swept key and the metric and
    has a validation split to judge trials on (all before training)."""
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric}: use one of {', '.join(METRICS)}")
    base = load_recipe(recipe_ref, space.fixed)
    for overrides in space.variants():  # every swept key and each value of a choice
        check_backbone(load_recipe(recipe_ref, space.fixed + overrides).config)
    if base.config.data.val_fraction <= 0:
        raise ConfigError(
            "a sweep judges trials on the validation split: set data.val_fraction above 0"
        )
    return base


def _optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    trials: int,
    timeout: float | None,
    client: MlflowClient,
    parent: str,
    stores: tuple[str, str],
) -> list[optuna.Trial]:
    """Run the trials; the ones this worker made (others may run trials of the study too). On
    Ctrl-C, SIGTERM or an error, whenever it comes, those of them still running are marked
    failed, and the sweep's MLflow run KILLED (FAILED on an error). The clean-up is best
    effort: a store that went away is reported in one line, not hidden behind the clean-up's
    own failure.

    Raises:
        Interrupted: Ctrl-C.
        Terminated: SIGTERM.
        ConfigError: the Optuna storage or the MLflow store stopped answering.
    """
    mine: list[optuna.Trial] = []
    try:
        run_trials(study, objective, trials, timeout, TRIAL_REFUSALS, mine)
    except BaseException as exc:
        best_effort(fail_unfinished, study, mine, stop_reason(exc))  # first: nothing RUNNING
        stopped = isinstance(exc, Interrupted | KeyboardInterrupt) or is_sigterm(exc)
        best_effort(client.set_terminated, parent, "KILLED" if stopped else "FAILED")
        if not stopped:
            gone = gone_store_error(exc, *stores)  # (the Optuna storage, the MLflow store)
            if gone is not None:
                raise gone from None
            raise
        finished = sum(t.state == TrialState.COMPLETE for t in _trials_if_readable(study))
        kept = (
            f"the study '{study.study_name}' keeps its {finished} finished trial(s): run the "
            "same command to add more"
        )
        if is_sigterm(exc):
            raise Terminated(f"terminated (SIGTERM); {kept}") from None
        raise Interrupted(f"interrupted; {kept}") from None
    return mine


def _trials_if_readable(study: optuna.Study) -> list[FrozenTrial]:
    try:
        return study.trials
    except Exception:  # the storage went away with the worker
        return []


def _one_device(space: SearchSpace, trainer: Any) -> SearchSpace:
    """Each trial trains in this process on one device: a distributed strategy would have
    Lightning start the whole sweep again in every process. "auto" devices become 1.

    Raises:
        ConfigError: the recipe asks for several devices or a DDP strategy.
    """
    devices = trainer.devices
    several = devices == -1 or (isinstance(devices, int) and devices > 1)
    several = several or (isinstance(devices, list) and len(devices) > 1)
    if several or "ddp" in trainer.strategy or trainer.num_nodes > 1:
        raise ConfigError(
            f"a sweep trains each trial on one device (trainer.devices={devices}, "
            f"trainer.num_nodes={trainer.num_nodes}, trainer.strategy={trainer.strategy}): "
            "leave them out and start one worker per device on one --storage instead"
        )
    if devices == "auto":
        return SearchSpace([*space.fixed, "trainer.devices=1"], space.distributions)
    return space


def _run_trial(
    trial: optuna.Trial,
    recipe_ref: str,
    space: SearchSpace,
    out_dir: Path,
    metric: str,
    prune: bool,
    parent: str,
    client: Any,
) -> float:
    """Train the trial and return its value; a trial that does not finish says why (a SIGTERM
    anywhere in it too, before its data is ready: it is never left RUNNING)."""
    folder = out_dir / f"trial-{trial.number}"
    try:
        recipe = _trial_recipe(trial, recipe_ref, space, folder)
        tags = {
            "mlflow.parentRunId": parent,
            "mlfactory.sweep": trial.study.study_name,
            "mlfactory.sweep_trial": str(trial.number),
        }
        result = train(
            recipe,
            folder,
            progress=False,
            force=True,
            callbacks=_pruning(trial, metric) if prune else [],
            run_tags=tags,
        )
        value = trial_value(client, result.mlflow_run_id, metric)
    except optuna.TrialPruned:
        run_id = keep_run_id(trial, folder)
        if run_id:
            best_effort(client.set_tag, run_id, "mlfactory.sweep_state", "PRUNED")
            best_effort(client.set_terminated, run_id, "KILLED")
        phase_log.info("sweep: trial %d pruned: behind the median of earlier trials", trial.number)
        raise
    except TRIAL_REFUSALS as exc:
        trial.set_user_attr("error", str(exc))
        keep_run_id(trial, folder)
        phase_log.info("sweep: trial %d failed: %s", trial.number, exc)
        raise
    except BaseException as exc:
        raise record_failure(trial, exc, folder, client) from None
    trial.set_user_attr("mlflow_run_id", result.mlflow_run_id)
    assert result.bundle is not None  # a trial trains in this one process
    trial.set_user_attr("bundle", str(result.bundle.path.resolve()))
    client.set_tag(result.mlflow_run_id, "mlfactory.sweep_value", f"{metric}={value:.6g}")
    phase_log.info("sweep: trial %d: %s %.4f", trial.number, metric, value)
    return value


def _trial_recipe(trial: optuna.Trial, recipe_ref: str, space: SearchSpace, folder: Path) -> Recipe:
    """The recipe with the values the trial draws (said in its first line)."""
    params = {key: _suggest(trial, key, dist) for key, dist in space.distributions.items()}
    shown = " ".join(f"{key}={value}" for key, value in params.items())
    phase_log.info("sweep: trial %d: %s", trial.number, shown)
    trial.set_user_attr("folder", str(folder.resolve()))
    return load_recipe(
        recipe_ref, space.fixed + [f"{k}={hydra_value(v)}" for k, v in params.items()]
    )


def _pruning(trial: optuna.Trial, metric: str) -> list[Any]:
    from optuna_integration import PyTorchLightningPruningCallback

    return [PyTorchLightningPruningCallback(trial, monitor=metric)]


def trial_value(client: Any, run_id: str, metric: str) -> float:
    """`metric` at the epoch of the lowest validation loss: the epoch the bundle holds.

    Raises:
        ConfigError: the run logged no validation loss (a validation split of no item).
    """
    losses = client.get_metric_history(run_id, "val/loss")
    if not losses:
        raise ConfigError("the trial logged no validation loss: its validation split is empty")
    best = min(losses, key=lambda m: (m.value, m.step))
    if metric == "val/loss":
        return float(best.value)
    values = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
    return float(values[best.step])


def _suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial finished yet
        return None


def _outcome(trial: FrozenTrial) -> TrialOutcome:
    return TrialOutcome(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        value=trial.value,
        run_id=trial.user_attrs.get("mlflow_run_id"),
        bundle=trial.user_attrs.get("bundle"),
        error=trial.user_attrs.get("error")
        or (NO_REASON if trial.state == TrialState.FAIL else None),
    )
