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
trials of one study at once.
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

from mlfactory import tracking
from mlfactory.config.loader import Recipe, load_recipe
from mlfactory.errors import ConfigError, DataError, Interrupted
from mlfactory.mlflow_store import shown_url, tracking_client
from mlfactory.output import phase_log, said_once
from mlfactory.training.backbones import check_backbone
from mlfactory.training.lightning_trainer import check_devices
from mlfactory.training.run_start import check_tracking_store
from mlfactory.training.search_space import SearchSpace, hydra_value
from mlfactory.training.sweep_study import (
    DEFAULT_STORAGE,
    check_out_path,
    check_study,
    claim_out,
    open_study,
    storage_url,
)
from mlfactory.training.train import train

log = logging.getLogger(__name__)

# The metrics a trial can be judged by, and which way is better.
METRICS: dict[str, Literal["minimize", "maximize"]] = {
    "val/loss": "minimize",
    "val/acc": "maximize",
    "val/f1_macro": "maximize",
}
PARENT_RUN_ATTR = "mlflow_parent_run_id"
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
    ran: int  # trials this call started
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
            store or a storage that cannot be opened, a study that judges trials by another
            metric or was started with other fixed overrides or another space, or an `out_dir`
            that is a file or holds another study's trials.
        Interrupted: Ctrl-C (the interrupted trial is marked failed; the rest stay).
    """
    base = _checked_recipe(recipe_ref, space, metric)
    space = _one_device(space, base.config.trainer)
    name = study_name or f"{base.name}-sweep"
    out_dir = out_dir or Path("runs") / name
    check_out_path(out_dir)
    storage = storage_url(storage)
    if prune and pruner is None:
        pruner = optuna.pruners.MedianPruner()
    # A tracking store (or a device) that cannot be used is refused before the study's storage
    # is created.
    check_devices(base.config.trainer)
    check_tracking_store(base.config.tracking)
    study = open_study(name, storage, METRICS[metric], pruner, base.config.seed)
    check_study(study, metric, space)
    claim_out(study, storage, out_dir)
    client = tracking_client(base.config.tracking)  # it answers, before any trial trains
    parent = _parent_run(study, client, base.config.tracking, space, metric)

    def objective(trial: optuna.Trial) -> float:
        return _run_trial(trial, recipe_ref, space, out_dir, metric, prune, parent, client)

    before = len(study.trials)
    # The data and its profile, the same for every trial unless the space changes them.
    with said_once("data: ", "warning: ", "monitoring: "):
        _optimize(study, objective, trials, timeout, client, parent)
    outcomes = [_outcome(t) for t in study.trials]
    best = _best(study)
    _summarize_parent(client, parent, best)
    return SweepResult(
        study=name,
        storage=shown_url(storage),
        metric=metric,
        direction=METRICS[metric],
        parent_run_id=parent,
        ran=len(study.trials) - before,
        trials=outcomes,
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
) -> None:
    """Run the trials; the sweep's MLflow run is marked KILLED on Ctrl-C, FAILED on an error."""
    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=TRIAL_REFUSALS)
    except Interrupted:
        client.set_terminated(parent, "KILLED")
        finished = sum(t.state == TrialState.COMPLETE for t in study.trials)
        raise Interrupted(
            f"interrupted; the study '{study.study_name}' keeps its {finished} finished "
            "trial(s): run the same command to add more"
        ) from None
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise


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


def _parent_run(
    study: optuna.Study, client: Any, config: Any, space: SearchSpace, metric: str
) -> str:
    """The study's MLflow run, which the trials' runs are nested under (one per study)."""
    from mlflow.exceptions import MlflowException

    known = study.user_attrs.get(PARENT_RUN_ATTR)
    if known:
        try:
            client.get_run(known)
            client.update_run(known, status="RUNNING")
            return str(known)
        except MlflowException:
            log.info("the study's MLflow run %s is gone: starting another", known)
    experiment = client.get_experiment_by_name(config.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(config.experiment, config.artifact_location)
    )
    run = client.create_run(
        experiment_id, run_name=study.study_name, tags={"mlfactory.sweep": study.study_name}
    )
    run_id = run.info.run_id
    client.log_param(run_id, "metric", metric)
    client.log_param(run_id, "direction", METRICS[metric])
    for key, described in space.describe().items():
        client.log_param(run_id, f"space.{key}", described)
    for override in space.fixed:
        key, _, value = override.partition("=")
        client.log_param(run_id, f"fixed.{key}", value)
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return str(run_id)


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
    from optuna_integration import PyTorchLightningPruningCallback

    params = {key: _suggest(trial, key, dist) for key, dist in space.distributions.items()}
    shown = " ".join(f"{key}={value}" for key, value in params.items())
    phase_log.info("sweep: trial %d: %s", trial.number, shown)
    folder = out_dir / f"trial-{trial.number}"
    trial.set_user_attr("folder", str(folder.resolve()))
    tags = {
        "mlflow.parentRunId": parent,
        "mlfactory.sweep": trial.study.study_name,
        "mlfactory.sweep_trial": str(trial.number),
    }
    callbacks = [PyTorchLightningPruningCallback(trial, monitor=metric)] if prune else []
    try:
        recipe = load_recipe(
            recipe_ref, space.fixed + [f"{k}={hydra_value(v)}" for k, v in params.items()]
        )
        result = train(
            recipe, folder, progress=False, force=True, callbacks=callbacks, run_tags=tags
        )
        value = trial_value(client, result.mlflow_run_id, metric)
    except optuna.TrialPruned:
        state = tracking.load_run_state(folder) or {}
        if state.get("mlflow_run_id"):
            trial.set_user_attr("mlflow_run_id", state["mlflow_run_id"])
            client.set_tag(state["mlflow_run_id"], "mlfactory.sweep_state", "PRUNED")
            client.set_terminated(state["mlflow_run_id"], "KILLED")
        phase_log.info("sweep: trial %d pruned: behind the median of earlier trials", trial.number)
        raise
    except TRIAL_REFUSALS as exc:
        trial.set_user_attr("error", str(exc))
        phase_log.info("sweep: trial %d failed: %s", trial.number, exc)
        raise
    except (Interrupted, KeyboardInterrupt):
        trial.set_user_attr("error", "interrupted (Ctrl-C)")
        raise
    trial.set_user_attr("mlflow_run_id", result.mlflow_run_id)
    assert result.bundle is not None  # a trial trains in this one process
    trial.set_user_attr("bundle", str(result.bundle.path.resolve()))
    client.set_tag(result.mlflow_run_id, "mlfactory.sweep_value", f"{metric}={value:.6g}")
    phase_log.info("sweep: trial %d: %s %.4f", trial.number, metric, value)
    return value


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
        error=trial.user_attrs.get("error"),
    )


def _summarize_parent(client: Any, parent: str, best: FrozenTrial | None) -> None:
    if best is not None and best.value is not None:
        client.log_metric(parent, "best_value", best.value)
        client.set_tag(parent, "best_trial", str(best.number))
        if best.user_attrs.get("mlflow_run_id"):
            client.set_tag(parent, "best_run_id", best.user_attrs["mlflow_run_id"])
    client.set_terminated(parent, "FINISHED")
