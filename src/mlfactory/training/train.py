"""`mlfactory train`: prepared data -> Lightning fit -> bundle -> evaluation, tracked in MLflow.

`train` runs five steps, each a function here: the run folder (`_start_run_folder`), the data
and the model (`prepare_fit`), tracking (`_start_tracking`), the Lightning Trainer
(`make_trainer`), and publishing the result (`_publish`: best weights -> bundle -> evaluation
-> MLflow). What it prints and how it fails are in `report`; what a run folder may hold and what
`--resume` may change are in `run_folder`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.profilers import Profiler
from lightning.pytorch.utilities import rank_zero_only

from mlfactory import tracking
from mlfactory.artifact_stores import missing_artifact_client
from mlfactory.bundle import Bundle, BundleMeta, load_bundle
from mlfactory.config.loader import Recipe, preprocessing_params
from mlfactory.config.schema import RecipeConfig
from mlfactory.data.dataset import PreparedDataset
from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import ConfigError
from mlfactory.evaluation import record_evaluation
from mlfactory.modalities import Encoder, get_modality
from mlfactory.monitoring.reference import reference_items, write_profile
from mlfactory.output import adopt_library_loggers, phase_log
from mlfactory.training.backbones import build_classifier, training_encoder
from mlfactory.training.datamodule import ClassificationData
from mlfactory.training.encoded_cache import EncodedCache
from mlfactory.training.export import export_bundle
from mlfactory.training.fit_errors import FIT_ERRORS, fit_error
from mlfactory.training.float_kernels import float_kernels
from mlfactory.training.launcher import check_launched
from mlfactory.training.memory_format import to_memory_format, training_memory_format
from mlfactory.training.module import ClassifierModule
from mlfactory.training.ood_graph import attach_ood_score
from mlfactory.training.profiling import make_profiler, publish_profile
from mlfactory.training.pruning import prune_attention_heads, prune_classifier
from mlfactory.training.report import EpochLines, report_dataset, report_results, user_errors
from mlfactory.training.run_folder import (
    BUNDLE_DIR,
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    check_new_run,
    check_same_data,
    clean_checkpoints,
    resume_state,
)
from mlfactory.training.tracking import make_logger, tracked_run

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a training run left things."""

    # None only in a process of a multi-node run on another machine than the one that owns the
    # run (its run folder is not shared): the bundle is on the owner's machine.
    bundle: Bundle | None
    out_dir: Path
    mlflow_run_id: str
    metrics: dict[str, Any]
    seconds: float
    dataset: PreparedDataset


@dataclass
class FitSetup:
    """Everything `Trainer.fit` needs, and what the export needs afterwards."""

    dataset: PreparedDataset
    params: dict[str, Any]
    encoder: Encoder
    assets: list[Path]
    module: ClassifierModule
    data: ClassificationData
    pruning: list[str] = field(default_factory=list)  # what `model.prune_*` removed


def train(
    recipe: Recipe,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    force: bool = False,
    keep_checkpoints: bool = False,
    callbacks: Sequence[Callback] = (),
    run_tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train the recipe's model, export its bundle to `out_dir/bundle` and evaluate it.

    Args:
        recipe: the composed recipe (for `resume`, see `run_folder.resume_recipe`).
        out_dir: run folder (checkpoints, run.json, confusion matrix, bundle/).
        resume: continue from `out_dir/checkpoints/last.ckpt` and the same MLflow run.
        progress: show a progress bar.
        force: start a new run even if `out_dir` holds a bundle or an interrupted run.
        keep_checkpoints: keep every checkpoint; by default only best and last stay.
        callbacks: more Lightning callbacks (a sweep's pruning callback).
        run_tags: tags of a new MLflow run (a sweep's trial: its parent run and number).

    Raises:
        ConfigError: `out_dir` is occupied (without `force`), there is nothing to resume, the
            data changed since the resumed run started, or Lightning refused a setting.
        Interrupted: Ctrl-C; the MLflow run is marked KILLED.
    """
    started = time.perf_counter()
    adopt_library_loggers()
    config = recipe.config
    check_launched(config.trainer.num_nodes)
    state = _start_run_folder(out_dir, resume, force)
    if state is not None:
        _check_more_epochs(out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT, config.trainer.max_epochs)
    L.seed_everything(config.seed, workers=True, verbose=False)
    setup = prepare_fit(config, out_dir)
    if is_global_zero():
        report_dataset(setup.dataset)
        for removed in setup.pruning:
            phase_log.info("model: %s", removed)
    if state is not None:
        check_same_data(state, setup.dataset.fingerprint, out_dir)
    logger = _start_tracking(recipe, setup.dataset, out_dir, state, run_tags)
    with user_errors(logger, recipe, out_dir):
        bundle, run_id, metrics = _fit_and_publish(
            recipe, setup, logger, out_dir, resume, progress, keep_checkpoints, callbacks
        )
    return TrainResult(
        bundle, out_dir, run_id, metrics, time.perf_counter() - started, setup.dataset
    )


def _fit_and_publish(
    recipe: Recipe,
    setup: FitSetup,
    logger: MLFlowLogger | None,
    out_dir: Path,
    resume: bool,
    progress: bool,
    keep_checkpoints: bool,
    callbacks: Sequence[Callback] = (),
) -> tuple[Bundle | None, str, dict[str, Any]]:
    """Fit, then (rank 0) export, evaluate and log: the bundle, the MLflow run id, test metrics."""
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    train_items = len(setup.dataset.split("train"))
    trainer, checkpoint = make_trainer(
        recipe.config, logger, checkpoint_dir, progress, train_items, callbacks
    )
    last = checkpoint_dir / LAST_CHECKPOINT
    try:
        trainer.fit(setup.module, datamodule=setup.data, ckpt_path=str(last) if resume else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning's answer to Ctrl-C during fit: sys.exit(1)
            raise KeyboardInterrupt from None
        raise
    except FIT_ERRORS as exc:
        error = fit_error(
            exc,
            recipe.config.trainer.strategy,
            setup.module.net,
            setup.encoder,
            last if resume else None,
        )
        if error is None:
            raise
        raise error from None
    if not trainer.is_global_zero:
        # Under DDP only rank 0 exports, evaluates and logs; the others wait for its bundle,
        # which the processes of other machines (multi-node, no shared run folder) never see.
        trainer.strategy.barrier("bundle")
        if not (out_dir / BUNDLE_DIR / "bundle.json").is_file():
            return None, "", {}
        bundle = load_bundle(out_dir / BUNDLE_DIR)
        return bundle, bundle.meta.mlflow_run_id or "", bundle.meta.metrics["test"]
    assert logger is not None  # the owner (rank 0) always has one
    bundle, metrics = _publish(recipe, setup, checkpoint, logger, out_dir)
    if not keep_checkpoints:
        clean_checkpoints(checkpoint_dir, checkpoint.best_model_path)
    if trainer.world_size > 1:
        trainer.strategy.barrier("bundle")
    # After the barrier: under DDP every rank has written its report by then.
    publish_profile(out_dir, logger, recipe.config.trainer.profiler)
    return bundle, logger.run_id or "", metrics


def _start_run_folder(out_dir: Path, resume: bool, force: bool) -> dict[str, Any] | None:
    """The state of the run to resume (None for a new run, whose old checkpoints are removed).

    Raises:
        ConfigError: `resume` but `out_dir` holds no interrupted run; a new run over a bundle
            or an interrupted run without `force`.
    """
    if resume:
        return resume_state(out_dir, force)
    check_new_run(out_dir, force)
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return None


def _check_more_epochs(last: Path, max_epochs: int) -> None:
    """Resuming needs `trainer.max_epochs` at least the epochs already trained.

    Checked before the MLflow run is touched: Lightning would refuse the same later, after
    marking the run FAILED.

    Raises:
        ConfigError: `max_epochs` is below the epochs the checkpoint has trained.
    """
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    # What Lightning restores as `current_epoch`: the epochs processed (saved at epoch end).
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    trained = int(progress.get("current", {}).get("processed", checkpoint["epoch"] + 1))
    if max_epochs < trained:
        raise ConfigError(
            f"--resume: the run has trained {trained} epochs; trainer.max_epochs={max_epochs} "
            f"is fewer: set it to more than {trained} to train longer"
        )


def prepare_fit(config: RecipeConfig, out_dir: Path) -> FitSetup:
    """The prepared data, the modality's encoder and augmentation, the network and its module."""
    dataset = prepare_dataset(config)
    params = preprocessing_params(config)
    encoder, assets = training_encoder(config, params, out_dir)
    net = build_classifier(config, len(dataset.labels))
    pruning = []
    if config.model.prune_heads:
        fewer_heads = prune_attention_heads(net, encoder, config.model.prune_heads)
        pruning.append(fewer_heads.summary(config.model.prune_heads))
    if config.model.prune_channels:
        pruned = prune_classifier(net, encoder, config.model.prune_channels)
        net = pruned.net
        pruning.append(pruned.summary(config.model.prune_channels))
    trainer = config.trainer
    to_memory_format(net, training_memory_format(net, trainer.memory_format))
    module = ClassifierModule(
        net,
        len(dataset.labels),
        trainer.lr,
        trainer.weight_decay,
        trainer.max_epochs,
        class_weights=class_weights(dataset, trainer.class_weights),
        lr_schedule=trainer.lr_schedule,
        lr_step_epochs=trainer.lr_step_epochs,
        lr_gamma=trainer.lr_gamma,
        compile_mode=trainer.compile_mode if trainer.compile else None,
    )
    augment = get_modality(config.modality).augmentation() if trainer.augment else None
    cache = EncodedCache(
        Path(config.data.cache_dir) / "encoded",
        trainer.encoded_cache_gb,
        config.modality,
        params,
        assets,
        trainer.num_workers,
    )
    limits = {"train": trainer.limit_train_batches, "val": trainer.limit_val_batches}
    data = ClassificationData(
        dataset,
        encoder,
        trainer.batch_size,
        trainer.num_workers,
        augment,
        config.seed,
        cache,
        limits,
    )
    return FitSetup(dataset, params, encoder, assets, module, data, pruning)


def class_weights(dataset: PreparedDataset, mode: str | None) -> list[float] | None:
    """Per-label loss weights from the train split (`trainer.class_weights`).

    "balanced" gives label c the weight n / (k * n_c) (n train items, k labels, n_c of them
    labelled c), as scikit-learn's `class_weight="balanced"`: each class then contributes to the
    loss as if the classes were equally frequent. None weighs every item alike.
    """
    if mode is None:
        return None
    counts = Counter(item.label for item in dataset.split("train"))
    total, labels = sum(counts.values()), dataset.labels
    # A label with no train item cannot be learned; weight 0 keeps it out of the loss.
    return [total / (len(labels) * counts[label]) if counts[label] else 0.0 for label in labels]


def _start_tracking(
    recipe: Recipe,
    dataset: PreparedDataset,
    out_dir: Path,
    state: dict[str, Any] | None,
    tags: dict[str, str] | None = None,
) -> MLFlowLogger | None:
    """The run's MLflow logger; a new run gets the recipe as params and the data fingerprint.

    None in the other processes of a distributed run: only the owner (rank 0) opens the
    tracking store. Under torchrun every process starts at once, and two processes opening a
    new SQLite store create its tables at the same time; on another machine the store may not
    be there at all.

    `run.json` remembers what `--resume` needs: the run id, the resolved recipe, the overrides
    it was composed with and the data fingerprint. A resumed run keeps its MLflow params; what
    `--resume` changed is tagged `resumed_with`.
    """
    if not is_global_zero():
        return None
    run_id = state["mlflow_run_id"] if state is not None else None
    logger = make_logger(recipe.config.tracking, recipe.name, run_id, tags)
    # Before any training: a run whose artifacts go to a bucket needs that store's client here,
    # or the bundle could not be logged at the end.
    root = logger.experiment.get_run(logger.run_id).info.artifact_uri
    missing = missing_artifact_client(root, "written")
    if missing is not None:
        if state is None:
            logger.experiment.set_terminated(logger.run_id, "FAILED")
        raise ConfigError(f"tracking: MLflow run {logger.run_id}: {missing}")
    if state is None:
        logger.log_hyperparams(tracking.flatten(recipe.resolved))
        logger.experiment.set_tag(logger.run_id, "data_fingerprint", dataset.fingerprint)
        if dataset.version:  # the versioned source at its commit (`dvc:...@<sha>`)
            logger.experiment.set_tag(logger.run_id, "data_version", dataset.version)
        logger.experiment.set_tag(logger.run_id, "float_kernels", float_kernels())
    elif recipe.overrides[len(state.get("overrides", [])) :]:
        added = recipe.overrides[len(state.get("overrides", [])) :]
        logger.experiment.set_tag(logger.run_id, "resumed_with", " ".join(added))
    tracking.save_run_state(
        out_dir,
        {
            "mlflow_run_id": logger.run_id,
            "recipe": recipe.resolved,
            "reference": recipe.reference,
            "overrides": recipe.overrides,
            "data_fingerprint": dataset.fingerprint,
        },
    )
    return logger


def make_trainer(
    config: RecipeConfig,
    logger: MLFlowLogger | None,
    checkpoint_dir: Path,
    progress: bool,
    train_items: int | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Lightning Trainer of the recipe, and its best/last checkpoint callback.

    Args:
        config: the recipe.
        logger: the run's MLflow logger.
        checkpoint_dir: where `best.ckpt` and `last.ckpt` go (in the run folder, whose
            `profiler/` gets the reports of `trainer.profiler`).
        progress: show a progress bar (on a TTY); one line per epoch is always reported.
        train_items: train split size, to log at least once per epoch on a small data set.
        extra_callbacks: more callbacks (a sweep's pruning callback).
    """
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="best", monitor="val/loss", mode="min", save_last=True
    )
    callbacks: list[Any] = [
        checkpoint,
        EarlyStopping("val/loss", patience=config.trainer.patience),
        EpochLines(),
        *extra_callbacks,
    ]
    if progress:
        callbacks.append(RichProgressBar(leave=False))
    options = config.trainer
    profiler = make_profiler(options.profiler, checkpoint_dir.parent)
    if isinstance(profiler, Callback):
        callbacks.append(profiler)
    batches = math.ceil((train_items or 1) / options.batch_size)
    if options.limit_train_batches is not None:
        batches = min(batches, options.limit_train_batches)
    trainer = L.Trainer(
        max_epochs=options.max_epochs,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=options.strategy,
        precision=options.precision,  # type: ignore[arg-type]
        gradient_clip_val=options.gradient_clip_val,
        limit_train_batches=options.limit_train_batches,
        limit_val_batches=options.limit_val_batches,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        profiler=profiler if isinstance(profiler, Profiler) else None,
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic="warn",
        # Step losses every 10 batches, and at least once per epoch on a small train split.
        log_every_n_steps=max(1, min(10, batches)),
    )
    return trainer, checkpoint


def _publish(
    recipe: Recipe,
    setup: FitSetup,
    checkpoint: ModelCheckpoint,
    logger: MLFlowLogger,
    out_dir: Path,
) -> tuple[Bundle, dict[str, Any]]:
    """Best weights -> bundle (parity-checked on the test split) -> monitoring profile (from
    the validation split) -> evaluation -> MLflow.

    The bundle's version is the recipe's `version` if set, else the run's number among the
    MLflow runs of this name (`TrackedRun.run_number`): every training run has its own.
    """
    _load_best_weights(setup.module, checkpoint)
    # Exported from the usual layout: the graph is the same, and so is its parity check.
    to_memory_format(setup.module.net, torch.contiguous_format)
    config, dataset = recipe.config, setup.dataset
    run = tracked_run(logger)
    meta = BundleMeta(
        name=config.name,
        version=config.version or str(run.run_number()),
        modality=config.modality,
        labels=dataset.labels,
        preprocessing=setup.params,
        git_commit=tracking.git_commit(),
        config=recipe.resolved,
        data_fingerprint=dataset.fingerprint,
        mlflow_run_id=logger.run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    test_items = dataset.split("test")
    bundle = export_bundle(
        setup.module.net,
        setup.encoder,
        meta,
        out_dir / BUNDLE_DIR,
        test_items,
        setup.assets,
        config.model.early_features,
    )
    phase_log.info(
        "export: bundle '%s' version %s in %s (ONNX matches PyTorch within %.1e on %d items)",
        meta.name,
        meta.version,
        bundle.path,
        meta.export.get("parity_max_abs_diff", 0.0),
        len(test_items),
    )
    logger.experiment.set_tag(logger.run_id, "bundle_version", meta.version)
    if write_profile(bundle, *reference_items(dataset)) is not None:
        attach_ood_score(bundle, test_items)
    metrics = record_evaluation(bundle, dataset, out_dir, run)
    report_results(metrics)
    run.log_artifact(bundle.path, BUNDLE_DIR)
    logger.experiment.set_terminated(logger.run_id, "FINISHED")
    return bundle, metrics


def is_global_zero() -> bool:
    """True in the process that owns the run: the only one, or rank 0 of a distributed job.

    The rank comes from the environment a launcher sets (Lightning's DDP launcher, torchrun,
    SLURM), so it is known before the Trainer exists.
    """
    return int(getattr(rank_zero_only, "rank", 0)) == 0


def _load_best_weights(module: ClassifierModule, checkpoint: ModelCheckpoint) -> None:
    path = checkpoint.best_model_path or checkpoint.last_model_path
    if not path:
        return
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    log.info("restored best weights from %s", path)
