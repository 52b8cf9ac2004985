"""`mlfactory train`: prepared data -> Lightning fit -> bundle -> evaluation, tracked in MLflow.

`train` runs five steps, each a function here or in a module beside it: the run folder
(`run_start.start_run_folder`), the data and the model (`prepare_fit`), tracking
(`run_start.start_tracking`), the Lightning Trainer (`lightning_trainer.make_trainer`), and
publishing the result (`publish.publish`: best weights -> bundle -> evaluation -> MLflow). What it
prints and how it fails are in `report`; what a run folder may hold and what `--resume` may change
are in `run_folder`.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger

from mlfactory.bundle import Bundle, load_bundle
from mlfactory.config.loader import Recipe, preprocessing_params
from mlfactory.config.schema import RecipeConfig
from mlfactory.data.dataset import PreparedDataset
from mlfactory.data.prepare import prepare_dataset
from mlfactory.modalities import Encoder, get_modality
from mlfactory.output import adopt_library_loggers, phase_log
from mlfactory.training.backbones import build_classifier, training_encoder
from mlfactory.training.datamodule import ClassificationData
from mlfactory.training.encoded_cache import EncodedCache
from mlfactory.training.fit_errors import FIT_ERRORS, fit_error
from mlfactory.training.launcher import check_launched
from mlfactory.training.lightning_trainer import check_devices, make_trainer
from mlfactory.training.memory_format import to_memory_format, training_memory_format
from mlfactory.training.module import ClassifierModule
from mlfactory.training.preflight import check_splits
from mlfactory.training.profiling import publish_profile
from mlfactory.training.pruning import prune_attention_heads, prune_classifier
from mlfactory.training.publish import publish
from mlfactory.training.random_state import RandomState
from mlfactory.training.report import report_dataset, user_errors
from mlfactory.training.run_folder import (
    BUNDLE_DIR,
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    check_same_data,
    clean_checkpoints,
    run_folder_lock,
)
from mlfactory.training.run_start import (
    check_more_epochs,
    check_tracking_store,
    is_global_zero,
    removed_if_the_start_fails,
    start_run_folder,
    start_tracking,
)


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
        ConfigError: the tracking store does not answer or MLflow cannot use it, `out_dir` is
            occupied (without `force`), there is nothing to resume, the data changed since the
            resumed run started, or Lightning refused a setting.
        Interrupted: Ctrl-C; the MLflow run is marked KILLED.
    """
    started = time.perf_counter()
    adopt_library_loggers()
    config = recipe.config
    check_launched(config.trainer.num_nodes)
    check_devices(config.trainer)
    check_tracking_store(config.tracking)
    with contextlib.ExitStack() as held:
        with removed_if_the_start_fails(out_dir):
            if is_global_zero():  # held for the whole run: a second run there is refused
                held.enter_context(run_folder_lock(out_dir))
            setup, logger = _start(recipe, out_dir, resume, force, run_tags)
        with user_errors(logger, recipe, out_dir):
            bundle, run_id, metrics = _fit_and_publish(
                recipe, setup, logger, out_dir, resume, progress, keep_checkpoints, callbacks
            )
    return TrainResult(
        bundle, out_dir, run_id, metrics, time.perf_counter() - started, setup.dataset
    )


def _start(
    recipe: Recipe, out_dir: Path, resume: bool, force: bool, run_tags: dict[str, str] | None
) -> tuple[FitSetup, MLFlowLogger | None]:
    """The run folder, the data and the model, and the MLflow run: what the fit starts from."""
    config = recipe.config
    state = start_run_folder(out_dir, resume, force)
    trained = 0
    if state is not None:
        last = out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        trained = check_more_epochs(last, config.trainer.max_epochs)
    # A resumed fit then continues the streams its checkpoint saved (`RandomState`).
    L.seed_everything(config.seed, workers=True, verbose=False)
    setup = prepare_fit(config, out_dir)
    if is_global_zero():
        report_dataset(setup.dataset)
        for removed in setup.pruning:
            phase_log.info("model: %s", removed)
    if state is not None:
        check_same_data(state, setup.dataset.fingerprint, out_dir)
    return setup, start_tracking(recipe, setup.dataset, out_dir, state, run_tags, trained)


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
        recipe.config, logger, checkpoint_dir, progress, train_items, (RandomState(), *callbacks)
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
    bundle, metrics = publish(recipe, setup, checkpoint, logger, out_dir)
    if not keep_checkpoints:
        clean_checkpoints(checkpoint_dir, checkpoint.best_model_path)
    if trainer.world_size > 1:
        trainer.strategy.barrier("bundle")
    # After the barrier: under DDP every rank has written its report by then.
    publish_profile(out_dir, logger, recipe.config.trainer.profiler)
    return bundle, logger.run_id or "", metrics


def prepare_fit(config: RecipeConfig, out_dir: Path) -> FitSetup:
    """The prepared data, the modality's encoder and augmentation, the network and its module."""
    dataset = prepare_dataset(config)  # refuses labels too long for a bundle, too
    check_splits(dataset, config.data)
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
