"""What `train` sets up before the fit: the run folder (new or resumed), the MLflow run, and
which process owns them (`is_global_zero`)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.exceptions import MlflowException

from mlfactory import mlflow_store, tracking
from mlfactory.artifact_stores import missing_artifact_client
from mlfactory.config.loader import Recipe
from mlfactory.config.schema import TrackingConfig
from mlfactory.data.dataset import PreparedDataset
from mlfactory.errors import ConfigError, first_line
from mlfactory.training.report import killed_on_interrupt
from mlfactory.training.run_folder import (
    FolderInUse,
    check_new_run,
    clear_previous_run,
    resume_state,
)
from mlfactory.training.run_record import code_record, code_tags, resume_entry, resume_tags
from mlfactory.training.tracking import interrupt_after, make_logger


def check_tracking_store(config: TrackingConfig) -> None:
    """`mlflow_store.check_tracking_store` in the process that owns the run."""
    mlflow_store.check_tracking_store(config, owner=is_global_zero())


def start_run_folder(out_dir: Path, resume: bool, force: bool) -> dict[str, Any] | None:
    """The state of the run to resume (None for a new run, whose old checkpoints are removed).

    Raises:
        ConfigError: `resume` but `out_dir` holds no interrupted run; a new run over a bundle
            or an interrupted run without `force`.
    """
    if resume:
        return resume_state(out_dir, force)
    check_new_run(out_dir, force)
    if is_global_zero():  # another rank starts once the owner has written the new run.json
        clear_previous_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return None


@contextlib.contextmanager
def removed_if_the_start_fails(out_dir: Path) -> Iterator[None]:
    """A run folder this call creates is removed again, with the parents it created, when the
    run fails before it has an MLflow run (missing data, a refused setting, Ctrl-C while the
    data is prepared): a failed start leaves no empty folder behind. A folder that was there
    already is left as it is (an earlier run, a resumed one). In the process that owns the
    run only (`is_global_zero`). A folder another run holds (`FolderInUse`) is that run's, even
    when it was made after this call began: it is never removed."""
    created = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]
    try:
        yield
    except FolderInUse:
        raise
    except BaseException:
        if created and is_global_zero():
            shutil.rmtree(out_dir, ignore_errors=True)
            for parent in created[1:]:
                with contextlib.suppress(OSError):  # another run wrote there meanwhile
                    parent.rmdir()
        raise


def check_more_epochs(last: Path, max_epochs: int) -> int:
    """Resuming needs `trainer.max_epochs` at least the epochs already trained; returns those.

    Checked before the MLflow run is touched: Lightning would refuse the same later, after
    marking the run FAILED.

    Raises:
        ConfigError: the checkpoint cannot be read (cut short, overwritten), or `max_epochs`
            is below the epochs it has trained.
    """
    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        # What Lightning restores as `current_epoch`: the epochs processed (saved at epoch end).
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
        trained = int(progress.get("current", {}).get("processed", checkpoint["epoch"] + 1))
    except (
        OSError,
        RuntimeError,
        EOFError,
        UnpicklingError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
    ) as exc:
        # What torch.load and a checkpoint of another shape raise: cut short, overwritten.
        why = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else repr(exc)
        if isinstance(exc, UnpicklingError):  # torch's advice to load it unsafely: never here
            why = "not a checkpoint that loads without running code from it"
        raise ConfigError(
            f"--resume: the checkpoint {last} is damaged or unreadable ({why}): start the run "
            "again with --force (without --resume), or restore the file"
        ) from None
    if max_epochs < trained:
        raise ConfigError(
            f"--resume: the run has trained {trained} epochs; trainer.max_epochs={max_epochs} "
            f"is fewer: set it to more than {trained} to train longer"
        )
    return trained


def start_tracking(
    recipe: Recipe,
    dataset: PreparedDataset,
    out_dir: Path,
    state: dict[str, Any] | None,
    tags: dict[str, str] | None = None,
    trained_epochs: int = 0,
) -> MLFlowLogger | None:
    """The run's MLflow logger; a new run gets the recipe as params and the data fingerprint.

    None in the other processes of a distributed run: only the owner (rank 0) opens the
    tracking store. Under torchrun every process starts at once, and two processes opening a
    new SQLite store create its tables at the same time; on another machine the store may not
    be there at all.

    `run.json` remembers what `--resume` needs: the run id, the resolved recipe, the overrides
    it was composed with and the data fingerprint; and the code that trained it, and each
    resume (`run_record`). A resumed run (after `trained_epochs` epochs) keeps its MLflow
    params; it is tagged `resumed`, and what it changed since the start `resumed_with`.
    """
    if not is_global_zero():
        return None
    run_id = state["mlflow_run_id"] if state is not None else None
    logger = make_logger(recipe.config.tracking, recipe.name, run_id, tags)
    # A Ctrl-C from here on marks the run KILLED; while MLflow creates it, it waits for the
    # run's id.
    store = mlflow_store.shown_url(recipe.config.tracking.tracking_uri)
    with killed_on_interrupt(logger, recipe, out_dir):
        try:
            with interrupt_after():
                run = logger.experiment.get_run(logger.run_id)
        except MlflowException as exc:
            if run_id is None:
                raise
            raise ConfigError(
                f"--resume: the MLflow run {run_id} of {out_dir} is not in the store {store} "
                f"({first_line(exc)}): deleted for good (mlflow gc), or run.json names a run of "
                "another store: start again with --force (without --resume)"
            ) from None
        if run_id is not None and run.info.lifecycle_stage == "deleted":
            raise ConfigError(
                f"--resume: the MLflow run {run_id} of {out_dir} was deleted in MLflow: restore "
                f"it with `mlflow runs restore --run-id {run_id}` (with MLFLOW_TRACKING_URI="
                f"{store}), or start again with --force (without --resume)"
            )
        _log_start(recipe, dataset, out_dir, state, logger, run.info.artifact_uri, trained_epochs)
    return logger


def _log_start(
    recipe: Recipe,
    dataset: PreparedDataset,
    out_dir: Path,
    state: dict[str, Any] | None,
    logger: MLFlowLogger,
    root: str,
    trained_epochs: int,
) -> None:
    """What a run records as it starts: the params and tags of a new run, the tags of a
    resumed one, `run.json`."""
    # Before any training: a run whose artifacts go to a bucket needs that store's client here,
    # or the bundle could not be logged at the end.
    missing = missing_artifact_client(root, "written")
    if missing is not None:
        if state is None:
            logger.experiment.set_terminated(logger.run_id, "FAILED")
        raise ConfigError(f"tracking: MLflow run {logger.run_id}: {missing}")
    code = code_record(recipe)
    if state is None:
        logger.log_hyperparams(tracking.flatten(recipe.resolved))
        tags = {"data_fingerprint": dataset.fingerprint, **code_tags(code)}
        if dataset.version:  # the versioned source at its commit (`dvc:...@<sha>`)
            tags["data_version"] = dataset.version
        state, resumes = {"recipe": recipe.resolved, "code": code}, []
    else:
        resumes = [*state.get("resumes", []), resume_entry(state, recipe, trained_epochs, code)]
        tags = resume_tags(state, resumes)
    for name, value in tags.items():
        logger.experiment.set_tag(logger.run_id, name, value)
    tracking.save_run_state(
        out_dir,
        {
            "mlflow_run_id": logger.run_id,
            "recipe": recipe.resolved,
            "started_recipe": state.get("started_recipe", state["recipe"]),
            "reference": recipe.reference,
            "overrides": recipe.overrides,
            "data_fingerprint": dataset.fingerprint,
            "code": state.get("code", code),  # what started the run; a resume's: in resumes
            "resumes": resumes,
        },
    )


def is_global_zero() -> bool:
    """True in the process that owns the run: the only one, or rank 0 of a distributed job.

    The rank comes from the environment a launcher sets (Lightning's DDP launcher, torchrun,
    SLURM), so it is known before the Trainer exists.
    """
    return int(getattr(rank_zero_only, "rank", 0)) == 0
