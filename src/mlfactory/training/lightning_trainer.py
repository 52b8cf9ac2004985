"""The Lightning Trainer of a recipe: its callbacks, profiler and settings (`make_trainer`)."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.profilers import Profiler

from mlfactory.config.schema import RecipeConfig, TrainerConfig
from mlfactory.errors import ConfigError
from mlfactory.output import configured_verbosity
from mlfactory.training.divergence import StopWhenDiverged
from mlfactory.training.profiling import make_profiler
from mlfactory.training.report import EpochLines, RankOutput
from mlfactory.training.run_checkpoint import RunFolderCheckpoint

# The devices each `trainer.accelerator` other than cpu and auto runs on, as Lightning reads it
# ("gpu": Apple's MPS, else CUDA), and how a user would name them.
DEVICES = {
    "gpu": ((MPSAccelerator, CUDAAccelerator), "CUDA or Apple MPS GPU"),
    "cuda": ((CUDAAccelerator,), "CUDA GPU"),
    "mps": ((MPSAccelerator,), "Apple MPS GPU"),
    "tpu": ((XLAAccelerator,), "TPU (through torch_xla)"),
}


def check_devices(trainer: TrainerConfig) -> None:
    """Refuse, before the run starts (no MLflow run, no run folder), what Lightning would
    refuse only once the run is open or with a traceback: an accelerator that torch finds no
    device of here (a TPU without torch_xla: a traceback), FSDP without a CUDA GPU (a
    traceback), DeepSpeed without its package.

    Raises:
        ConfigError: the machine cannot run these settings.
    """
    accelerator = trainer.accelerator
    if accelerator in DEVICES:  # cpu and auto always run
        kinds, what = DEVICES[accelerator]
        if not any(kind.is_available() for kind in kinds):
            raise ConfigError(
                f"trainer.accelerator={accelerator}: torch finds no {what} on this machine; use "
                "trainer.accelerator=cpu, or auto to take one where there is one"
            )
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto"
        and not any(kind.is_available() for kinds, _ in DEVICES.values() for kind in kinds)
    )
    if on_cpu and (isinstance(trainer.devices, list) or trainer.devices == -1):
        raise ConfigError(
            f"trainer.devices={trainer.devices}: device indices and -1 (all) pick GPUs, and this "
            "run is on the CPU: give the number of processes (trainer.devices=2) or auto"
        )
    _check_gpu_count(trainer)
    if trainer.strategy == "fsdp" and (
        accelerator not in ("auto", "gpu", "cuda") or not CUDAAccelerator.is_available()
    ):
        raise ConfigError(
            "trainer.strategy=fsdp: FSDP shards the model over CUDA GPUs, and this run has none "
            f"(trainer.accelerator={accelerator}); use ddp"
        )
    if trainer.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "trainer.strategy=deepspeed: DeepSpeed is not installed: pip install deepspeed "
            "(it needs CUDA GPUs), or use ddp"
        )


def _check_gpu_count(trainer: TrainerConfig) -> None:
    """Refuse more CUDA GPUs, or higher indices, than this machine shows (after
    CUDA_VISIBLE_DEVICES): Lightning does, once the MLflow run is open."""
    on_cuda = trainer.accelerator == "cuda" or (
        trainer.accelerator in ("gpu", "auto") and not MPSAccelerator.is_available()
    )
    if not on_cuda or not CUDAAccelerator.is_available():
        return
    present = CUDAAccelerator.auto_device_count()
    devices = trainer.devices
    if isinstance(devices, list):
        missing = [index for index in devices if index >= present]
        if missing:
            raise ConfigError(
                f"trainer.devices={devices}: this machine has {present} CUDA GPU(s), indices 0 "
                f"to {present - 1}, so {missing[0]} is not one; pick among those, or give a "
                "number of GPUs"
            )
    elif isinstance(devices, int) and devices > present:
        raise ConfigError(
            f"trainer.devices={devices}: this machine has {present} CUDA GPU(s); use at most "
            f"{present}, or -1 for all"
        )


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
    checkpoint = RunFolderCheckpoint(
        dirpath=checkpoint_dir, filename="best", monitor="val/loss", mode="min", save_last=True
    )
    callbacks: list[Any] = [
        checkpoint,
        EarlyStopping("val/loss", patience=config.trainer.patience),
        StopWhenDiverged(),
        EpochLines(),
        *extra_callbacks,
    ]
    if progress:
        callbacks.append(EpochProgressBar())
    verbose = configured_verbosity()
    if verbose is not None:  # the CLI's settings, for the ranks of ddp_spawn
        callbacks.append(RankOutput(verbose))
    options = config.trainer
    profiler = make_profiler(options.profiler, checkpoint_dir.parent)
    if isinstance(profiler, Callback):
        callbacks.append(profiler)
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
    )
    # Step losses every 10 batches, and at least once per epoch on a small train split: each
    # rank of a distributed run sees its own share of the split.
    interval = max(1, min(10, batches_per_rank(config, train_items, trainer)))
    trainer.log_every_n_steps = interval  # type: ignore[attr-defined]  # set in Trainer.__init__
    return trainer, checkpoint


class EpochProgressBar(RichProgressBar):
    """Rich's progress bar as a passing view: epochs counted from 1 (`Epoch 1/3`, as the epoch
    lines count them), no metrics beside it (the epoch lines report them; a row of them wraps
    on a narrow terminal) and gone from the screen when training ends (`transient`)."""

    def __init__(self) -> None:
        super().__init__(leave=False)

    def _init_progress(self, trainer: L.Trainer) -> None:
        super()._init_progress(trainer)
        if self.progress is not None:
            self.progress.live.transient = True

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """None: not even Lightning's `v_num` (the logger's version, no epoch's number)."""
        return {}


def batches_per_rank(config: RecipeConfig, train_items: int | None, trainer: L.Trainer) -> int:
    """Train batches of one rank in an epoch: its share of the split (DistributedSampler pads
    the split to a multiple of the ranks), then `trainer.limit_train_batches` if set."""
    items = math.ceil((train_items or 1) / trainer.world_size)
    batches = math.ceil(items / config.trainer.batch_size)
    limit = config.trainer.limit_train_batches
    return batches if limit is None else min(batches, limit)
