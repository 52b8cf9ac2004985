"""What a training run tells its user: one line per phase and per epoch, and one-line errors.

Lines go to the `mlfactory.phase` logger (`mlfactory.output`), which the CLI prints as bare
lines on stderr. `user_errors` turns what Lightning or torch raise for a user's settings into a
`ConfigError`, and a Ctrl-C into `Interrupted`, ending the MLflow run as KILLED or FAILED.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import MLFlowLogger

from mlfactory.config.loader import Recipe
from mlfactory.data.dataset import SPLITS, PreparedDataset
from mlfactory.data.prepare import describe_limits
from mlfactory.errors import ConfigError, Interrupted, first_line
from mlfactory.output import adopt_library_loggers, configure_output, phase_log
from mlfactory.training.run_folder import CHECKPOINT_DIR, LAST_CHECKPOINT, resume_command

SKIPS_SHOWN = 5


def report_dataset(dataset: PreparedDataset) -> None:
    """The data phase: classes, split sizes, the limits that applied, small-class warnings."""
    counts = dataset.counts()
    sizes = " / ".join(f"{sum(counts[split].values())} {split}" for split in SPLITS)
    skipped = f"; {len(dataset.skipped)} item(s) skipped" if dataset.skipped else ""
    phase_log.info(
        "data: %d classes, %s items (fingerprint %s%s)",
        len(dataset.labels),
        sizes,
        dataset.fingerprint,
        skipped,
    )
    for line in describe_limits(dataset):
        phase_log.info("data: %s", line)
    for line in dataset.warnings:
        phase_log.info("warning: %s", line)
    for entry in dataset.skipped[:SKIPS_SHOWN]:
        phase_log.info("data: skipped %s: %s", entry["path"], entry["reason"])
    if len(dataset.skipped) > SKIPS_SHOWN:
        more = len(dataset.skipped) - SKIPS_SHOWN
        phase_log.info("data: ... and %d more: `mlfactory data` with this recipe lists them", more)


class RankOutput(L.Callback):
    """Carries the CLI's output settings into the ranks that ddp_spawn starts. Those are new
    interpreters that unpickle the Trainer, this callback with it, but never run the CLI: without
    it Lightning's set-up lines and warnings print there unfiltered, and the epoch lines of rank
    0 not at all. Unpickling applies the settings before the rank's first line."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        configure_output(self.verbose)
        adopt_library_loggers()


class EpochLines(Checkpoint):
    """One line per epoch: losses and validation accuracy (the progress bar is only on a TTY).

    A `Checkpoint` to Lightning, which calls it after the `ModelCheckpoint` put before it in
    the callbacks: the line of an epoch comes once `last.ckpt` holds that epoch, so a run
    stopped after the line resumes after the epoch."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [
            f"{label} {float(metrics[key]):.4f}"
            for key, label in (
                ("train/loss_epoch", "train loss"),
                ("val/loss", "val loss"),
                ("val/acc", "val acc"),
            )
            if key in metrics
        ]
        phase_log.info(
            "epoch %d/%d: %s (%.0f s)",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            ", ".join(parts),
            time.perf_counter() - self.started,
        )


def report_results(metrics: dict[str, Any]) -> None:
    """The evaluation phase: test scores, and the labels left out of macro-F1."""
    phase_log.info(
        "evaluation: test accuracy %.4f, macro-F1 %.4f on %d items",
        metrics["accuracy"],
        metrics["f1_macro"],
        metrics["split_size"],
    )
    missing = metrics.get("unsupported_labels") or []
    if missing:
        phase_log.info(
            "evaluation: no test item of %s: left out of macro-F1 (add data to these classes)",
            ", ".join(missing),
        )


@contextmanager
def user_errors(logger: MLFlowLogger | None, recipe: Recipe, out_dir: Path) -> Iterator[None]:
    """Turn Ctrl-C and the errors a user's settings cause into one-line errors.

    Ctrl-C (during fit Lightning turns it into `SystemExit`; re-raise it as `KeyboardInterrupt`)
    marks the MLflow run KILLED and raises `Interrupted` with the command that resumes it
    (`logger` is None in the processes of a distributed run that do not own it).
    Lightning's `MisconfigurationException` (e.g. more `trainer.devices` than the machine has) and
    running out of memory become `ConfigError`s, and so does a network `torch.compile` could not
    compile (`trainer.compile`; e.g. no C++ compiler for TorchInductor on a CPU); every failure
    marks the run FAILED.

    Raises:
        Interrupted: on Ctrl-C.
        ConfigError: a setting Lightning or torch refused.
    """
    try:
        with killed_on_interrupt(logger, recipe, out_dir):
            yield
    except Interrupted:
        raise
    except MisconfigurationException as exc:
        _terminate(logger, "FAILED")
        raise ConfigError(f"Lightning refused the trainer settings: {first_line(exc)}") from None
    except torch._dynamo.exc.TorchDynamoException as exc:
        _terminate(logger, "FAILED")
        reason = getattr(exc, "inner_exception", None) or exc  # what the backend raised
        raise ConfigError(
            "trainer.compile: torch.compile could not compile the network: "
            f"{type(reason).__name__}: {first_line(reason)}; "
            "train without it: trainer.compile=false"
        ) from None
    except torch.OutOfMemoryError:
        _terminate(logger, "FAILED")
        raise ConfigError(
            f"out of memory with trainer.batch_size={recipe.config.trainer.batch_size}: "
            "lower it (or the preprocess sizes)"
        ) from None
    except BaseException:
        _terminate(logger, "FAILED")
        raise


@contextmanager
def killed_on_interrupt(
    logger: MLFlowLogger | None, recipe: Recipe, out_dir: Path
) -> Iterator[None]:
    """Ctrl-C marks the MLflow run KILLED and raises `Interrupted` with the command that
    resumes it (where an epoch was finished).

    Raises:
        Interrupted: on Ctrl-C.
    """
    try:
        yield
    except KeyboardInterrupt:
        _terminate(logger, "KILLED")
        last = out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        how = (
            f"continue it with: {resume_command(recipe, out_dir)}"
            if last.is_file()
            else "no epoch was finished, so there is nothing to resume: start it again"
        )
        marked = f"MLflow run {logger.run_id} marked KILLED; " if logger is not None else ""
        raise Interrupted(f"interrupted; {marked}{how}") from None


def _terminate(logger: MLFlowLogger | None, status: str) -> None:
    if logger is not None and logger.run_id:
        logger.experiment.set_terminated(logger.run_id, status)
