"""`mlfactory train`: prepared data -> Lightning fit -> bundle -> evaluation, tracked in MLflow."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only

from mlfactory.bundle import Bundle, BundleMeta, load_bundle
from mlfactory.config.loader import Recipe, preprocessing_params
from mlfactory.data.dataset import PreparedDataset
from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import ConfigError
from mlfactory.evaluation import CONFUSION_PNG, evaluate_items, plot_confusion_matrix
from mlfactory.modalities.audio import spec_augment
from mlfactory.predictor import Predictor
from mlfactory.training import tracking
from mlfactory.training.backbones import build_classifier
from mlfactory.training.datamodule import ClassificationData, flip_horizontal
from mlfactory.training.export import export_bundle
from mlfactory.training.modality_setup import training_encoder
from mlfactory.training.module import ClassifierModule

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


@dataclass
class TrainResult:
    """Where a training run left things."""

    bundle: Bundle
    out_dir: Path
    mlflow_run_id: str
    metrics: dict[str, Any]
    seconds: float
    dataset: PreparedDataset


def train(
    recipe: Recipe, out_dir: Path, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train the recipe's model, export its bundle to `out_dir/bundle` and evaluate it.

    Args:
        recipe: the composed recipe.
        out_dir: run folder (checkpoints, run.json, confusion matrix, bundle/).
        resume: continue from `out_dir/checkpoints/last.ckpt` and the same MLflow run.
        progress: show a progress bar.
    """
    started = time.perf_counter()
    config = recipe.config
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    state = tracking.load_run_state(out_dir) if resume else None
    last = checkpoint_dir / LAST_CHECKPOINT
    if resume and (state is None or not last.is_file()):
        raise ConfigError(f"--resume: no interrupted run in {out_dir} (no {last})")
    if not resume and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    L.seed_everything(config.seed, workers=True, verbose=False)
    dataset = prepare_dataset(config)
    params = preprocessing_params(config)
    encoder, assets = training_encoder(config, params, out_dir)
    net = build_classifier(config, len(dataset.labels))
    module = ClassifierModule(
        net,
        len(dataset.labels),
        config.trainer.lr,
        config.trainer.weight_decay,
        config.trainer.max_epochs,
        lr_schedule=config.trainer.lr_schedule,
        lr_step_epochs=config.trainer.lr_step_epochs,
        lr_gamma=config.trainer.lr_gamma,
    )
    augment = flip_horizontal if (config.trainer.augment and config.modality == "image") else None
    if config.trainer.augment and config.modality == "audio":
        augment = spec_augment
    data = ClassificationData(
        dataset,
        encoder,
        config.trainer.batch_size,
        config.trainer.num_workers,
        augment,
        config.seed,
    )
    run_id = state["mlflow_run_id"] if state else None
    logger = tracking.make_logger(config.tracking, config.name, run_id)
    if state is None:
        logger.log_hyperparams(tracking.flatten(recipe.resolved))
        logger.experiment.set_tag(logger.run_id, "data_fingerprint", dataset.fingerprint)
    if is_global_zero():  # under DDP the other ranks have no MLflow run of their own
        state = {"mlflow_run_id": logger.run_id, "recipe": recipe.resolved}
        tracking.save_run_state(out_dir, state)

    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="best", monitor="val/loss", mode="min", save_last=True
    )
    callbacks: list[Any] = [checkpoint, EarlyStopping("val/loss", patience=config.trainer.patience)]
    if progress:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        max_epochs=config.trainer.max_epochs,
        accelerator=config.trainer.accelerator,
        devices=config.trainer.devices,
        strategy=config.trainer.strategy,
        precision=config.trainer.precision,  # type: ignore[arg-type]
        gradient_clip_val=config.trainer.gradient_clip_val,
        limit_train_batches=config.trainer.limit_train_batches,
        limit_val_batches=config.trainer.limit_val_batches,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic="warn",
        log_every_n_steps=10,
    )
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    if not trainer.is_global_zero:
        # Under DDP only rank 0 exports, evaluates and logs; the others wait and read its bundle.
        trainer.strategy.barrier("bundle")
        bundle = load_bundle(out_dir / "bundle")
        return TrainResult(
            bundle,
            out_dir,
            bundle.meta.mlflow_run_id or "",
            bundle.meta.metrics["test"],
            time.perf_counter() - started,
            dataset,
        )
    _load_best_weights(module, checkpoint)

    meta = BundleMeta(
        name=config.name,
        version=config.version,
        modality=config.modality,
        labels=dataset.labels,
        preprocessing=params,
        git_commit=tracking.git_commit(),
        config=recipe.resolved,
        data_fingerprint=dataset.fingerprint,
        mlflow_run_id=logger.run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    test_items = dataset.split("test")
    bundle = export_bundle(module.net, encoder, meta, out_dir / "bundle", test_items, assets)
    metrics = record_evaluation(bundle, dataset, out_dir, logger)
    tracking.log_artifact(logger, bundle.path, "bundle")
    logger.experiment.set_terminated(logger.run_id, "FINISHED")
    if trainer.world_size > 1:
        trainer.strategy.barrier("bundle")
    return TrainResult(
        bundle, out_dir, logger.run_id or "", metrics, time.perf_counter() - started, dataset
    )


def is_global_zero() -> bool:
    """True in the process that owns the run: the only one, or rank 0 of a distributed job.

    The rank comes from the environment a launcher sets (Lightning's DDP launcher, torchrun,
    SLURM), so it is known before the Trainer exists.
    """
    return int(getattr(rank_zero_only, "rank", 0)) == 0


def record_evaluation(
    bundle: Bundle, dataset: PreparedDataset, out_dir: Path, logger: Any | None
) -> dict[str, Any]:
    """Evaluate the bundle on the test split; write metrics into bundle.json and MLflow."""
    metrics = evaluate_items(Predictor(bundle), dataset.split("test"))
    bundle.meta.metrics = {"test": metrics, "data_fingerprint": dataset.fingerprint}
    bundle.save_meta()
    png = plot_confusion_matrix(
        metrics["confusion_matrix"], bundle.meta.labels, out_dir / CONFUSION_PNG
    )
    if logger is not None:
        tracking.log_metrics(
            logger, {"test/acc": metrics["accuracy"], "test/f1_macro": metrics["f1_macro"]}
        )
        tracking.log_artifact(logger, png)
    return metrics


def _load_best_weights(module: ClassifierModule, checkpoint: ModelCheckpoint) -> None:
    path = checkpoint.best_model_path or checkpoint.last_model_path
    if not path:
        return
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    log.info("restored best weights from %s", path)
