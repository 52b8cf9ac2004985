"""Audio backbones: a log-mel spectrogram (batch, n_mels, frames) in dB -> an embedding.

- `cnn_transformer` (seed 3, birdcalls): conv blocks over the spectrogram (one per entry of
  `channels`, each halving both axes), each time step's features projected to `d_model`, a
  Transformer encoder (d_model 64, 2 heads, 1 layer by default) and mean pooling over time.
  Sized by `model.extra` (see `CNN_TRANSFORMER_EXTRA`).
- any timm image model, e.g. `efficientnet_lite0` (seed 4, emotions; the seed used VGG19): the
  spectrogram is scaled to [0, 1], copied to 3 channels and ImageNet-normalised inside the
  module, then fed to the image backbone with its (local) ImageNet weights.

Both start by mapping dB to roughly [0, 1] with the fixed range `db_min`..`db_max` of
`model.extra`, so the exported ONNX graph takes the encoder's log-mel as it is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlfactory.config.schema import RecipeConfig
from mlfactory.errors import ConfigError
from mlfactory.modalities.log_mel import FLOOR_DB, frame_count

CNN_TRANSFORMER = "cnn_transformer"
# Defaults of `model.extra`; the dB range applies to every audio backbone.
DB_RANGE_EXTRA: dict[str, Any] = {"db_min": FLOOR_DB, "db_max": 20.0}
CNN_TRANSFORMER_EXTRA: dict[str, Any] = {
    **DB_RANGE_EXTRA,
    "channels": [16, 32, 64],
    "d_model": 64,
    "heads": 2,
    "layers": 1,
    "feedforward": 128,
    "dropout": 0.1,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def backbone_assets(config: RecipeConfig, out_dir: Path) -> list[Path]:
    """Audio backbones need no files in the bundle."""
    return []


def check_backbone(config: RecipeConfig) -> None:
    """Refuse an unknown backbone name or `model.extra` key, without building the backbone."""
    if config.model.backbone == CNN_TRANSFORMER:
        _extra(config, CNN_TRANSFORMER_EXTRA)
        return
    from mlfactory.training.backbones.image import check_timm_name

    _extra(config, DB_RANGE_EXTRA)
    check_timm_name(config.model.backbone)


def build_backbone(config: RecipeConfig, params: dict[str, Any]) -> tuple[nn.Module, int]:
    """The recipe's audio backbone and the width of its embedding.

    Raises:
        ConfigError: an unknown `model.extra` key, or an unknown backbone name.
    """
    if config.model.backbone == CNN_TRANSFORMER:
        extra = _extra(config, CNN_TRANSFORMER_EXTRA)
        model = CnnTransformer(int(params["n_mels"]), frame_count(params), **extra)
        return model, int(extra["d_model"])
    from mlfactory.training.backbones.image import build_image_backbone

    extra = _extra(config, DB_RANGE_EXTRA)
    image_model, width = build_image_backbone(config.model)
    return SpectrogramAsImage(image_model, extra["db_min"], extra["db_max"]), width


def _extra(config: RecipeConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config.model.extra) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model.extra.{unknown[0]}: unknown key for backbone '{config.model.backbone}' "
            f"(allowed: {', '.join(sorted(defaults))})"
        )
    return {**defaults, **config.model.extra}


class DecibelScaling(nn.Module):
    """(dB - db_min) / (db_max - db_min): the floor maps to 0, loud bands to about 1."""

    def __init__(self, db_min: float, db_max: float) -> None:
        super().__init__()
        if db_max <= db_min:
            raise ConfigError(f"model.extra: db_max ({db_max}) must be above db_min ({db_min})")
        self.offset, self.span = float(db_min), float(db_max - db_min)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return (log_mel - self.offset) / self.span


class SpectrogramAsImage(nn.Module):
    """An ImageNet CNN on the spectrogram copied to 3 channels, normalised inside the module."""

    def __init__(self, image_model: nn.Module, db_min: float, db_max: float) -> None:
        super().__init__()
        self.scale = DecibelScaling(db_min, db_max)
        self.image_model = image_model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def early_stage(self) -> nn.Module | None:
        """The image model's early stage (see `mlfactory.training.network.early_stage`)."""
        from mlfactory.training.network import early_stage

        return early_stage(self.image_model)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        image = self.scale(log_mel).unsqueeze(1).expand(-1, 3, -1, -1)
        return self.image_model((image - self.mean) / self.std)


class CnnTransformer(nn.Module):
    """Conv blocks -> per-frame projection -> Transformer encoder -> mean over time."""

    def __init__(
        self,
        n_mels: int,
        frames: int,
        db_min: float,
        db_max: float,
        channels: list[int],
        d_model: int,
        heads: int,
        layers: int,
        feedforward: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if not channels or n_mels < 2 ** len(channels) or frames < 2 ** len(channels):
            most = int(math.log2(max(1, min(n_mels, frames))))
            fix = (
                f"use between 1 and {most} blocks"
                if most >= 1
                else "every block needs at least 2 of each: raise preprocess.n_mels (or the "
                "frames, preprocess.clip_seconds / preprocess.hop_length)"
            )
            raise ConfigError(
                f"model.extra.channels: {len(channels)} conv blocks halve the {n_mels} mel "
                f"bands and {frames} frames that many times; {fix}"
            )
        self.scale = DecibelScaling(db_min, db_max)
        blocks: list[nn.Module] = []
        for cin, cout in zip([1, *channels[:-1]], channels, strict=True):
            blocks += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.cnn = nn.Sequential(*blocks)
        bands, tokens = n_mels >> len(channels), frames >> len(channels)
        self.project = nn.Linear(channels[-1] * bands, d_model)
        self.register_buffer("position", sinusoidal_positions(tokens, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def early_stage(self) -> nn.Module:
        """The second conv block's pooling (a quarter of the resolution), or the first's."""
        pools = [module for module in self.cnn if isinstance(module, nn.MaxPool2d)]
        return pools[min(1, len(pools) - 1)]

    def prune_ignored(self) -> list[nn.Module]:
        """What `model.prune_channels` leaves whole: the last convolution, whose channels are
        flattened with the mel bands into the projection (a reshape pruning cannot follow)."""
        return [[module for module in self.cnn if isinstance(module, nn.Conv2d)][-1]]

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        features = self.cnn(self.scale(log_mel).unsqueeze(1))  # (B, C, bands, tokens)
        sequence = features.permute(0, 3, 1, 2).flatten(2)  # (B, tokens, C * bands)
        encoded = self.encoder(self.project(sequence) + self.position)
        return self.norm(encoded.mean(dim=1))


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """The Transformer paper's fixed position encodings, shape (1, length, width)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates[: width // 2])
    return table.unsqueeze(0)
