"""The sweep's own MLflow run, which every trial's run is nested under: one per study, whichever
worker creates it, and how a sweep that stops ends it.

Workers set a study up one at a time (`sweep_lock.study_setup_lock`): the first creates the
run and records its id in the study; the others find it there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from mlfactory.errors import BundleError, ConfigError, first_line
from mlfactory.mlflow_reach import database_tables, hide_password, reachable, shown_url
from mlfactory.tracking import without_secrets
from mlfactory.training.search_space import SearchSpace

log = logging.getLogger(__name__)

PARENT_RUN_ATTR = "mlflow_parent_run_id"


def parent_run(
    study: optuna.Study, client: Any, config: Any, space: SearchSpace, metric: str, direction: str
) -> str:
    """The study's MLflow run (created by the first worker; call it under the study's set-up
    lock). Its params: the metric, its direction, the space and the fixed overrides, without
    the credentials of their URLs (`without_secrets`)."""
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
    client.log_param(run_id, "direction", direction)
    for key, described in space.describe().items():
        client.log_param(run_id, f"space.{key}", described)
    for key, value in without_secrets(space.fixed_settings()).items():
        client.log_param(run_id, f"fixed.{key}", value)
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return str(run_id)


def summarize_parent(client: Any, parent: str, best: FrozenTrial | None) -> None:
    """The best trial's value and run on the sweep's run, which is marked FINISHED."""
    if best is not None and best.value is not None:
        client.log_metric(parent, "best_value", best.value)
        client.set_tag(parent, "best_trial", str(best.number))
        if best.user_attrs.get("mlflow_run_id"):
            client.set_tag(parent, "best_run_id", best.user_attrs["mlflow_run_id"])
    client.set_terminated(parent, "FINISHED")


def best_effort(call: Callable[..., Any], *args: Any) -> None:
    """`call(*args)`, whose failure (a store that went away) is logged and left: it runs while
    the sweep reports an error of its own, which must not be hidden by this one."""
    try:
        call(*args)
    except Exception as exc:  # any failure of the clean-up is secondary
        log.info("clean-up %s failed: %s", getattr(call, "__name__", call), first_line(exc))


def gone_store_error(exc: BaseException, storage: str, tracking_uri: str) -> ConfigError | None:
    """One line naming the store that stopped answering during the sweep (the Optuna storage
    or the MLflow tracking store), or None when both answer (`exc` was something else)."""
    stores = (("the Optuna storage --storage", storage), ("the MLflow store", tracking_uri))
    for what, uri in stores:
        problem = _unreachable(uri)
        if problem is not None:
            reason = hide_password(hide_password(first_line(exc), storage), tracking_uri)
            return ConfigError(
                f"{what} {shown_url(uri)} stopped answering during the sweep ({problem}): "
                f"{reason}; the study keeps its finished trials: run the same command once "
                "it answers again"
            )
    return None


def _unreachable(uri: str) -> str | None:
    """Why the database or server of `uri` cannot be reached now, or None."""
    try:
        if uri.startswith(("http://", "https://")):
            reachable.__wrapped__(uri)
        else:
            database_tables.__wrapped__(uri)
    except BundleError as exc:
        return first_line(exc).rpartition(": ")[2] or "no answer"
    return None
