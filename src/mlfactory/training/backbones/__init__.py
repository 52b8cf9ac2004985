"""Backbones per modality: the network that maps a modality's model inputs to an embedding.

The registry below is the one place in training that is keyed by modality: each family module
provides `build_backbone(config, params) -> (module, embedding width)`,
`backbone_assets(config, out_dir) -> files the bundle must carry` (a text backbone's tokenizer)
and `check_backbone(config)`, which refuses what it can without building the backbone.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from mlfactory.config.loader import preprocessing_params
from mlfactory.config.schema import RecipeConfig
from mlfactory.modalities import Encoder, get_modality
from mlfactory.training.network import Classifier

FAMILIES = {
    "image": "mlfactory.training.backbones.image",
    "text": "mlfactory.training.backbones.text",
    "audio": "mlfactory.training.backbones.audio",
}


def _family(config: RecipeConfig) -> ModuleType:
    return importlib.import_module(FAMILIES[config.modality])


def check_backbone(config: RecipeConfig) -> None:
    """Refuse a backbone (or `model.extra` key) the recipe's family does not know, without
    building it: a sweep checks every choice this way before any trial trains.

    Raises:
        ConfigError: naming the key and, for a timm name, the closest ones.
    """
    _family(config).check_backbone(config)


def build_classifier(config: RecipeConfig, num_classes: int) -> Classifier:
    """The recipe's backbone with a fresh classification head for `num_classes` labels."""
    backbone: nn.Module
    backbone, width = _family(config).build_backbone(config, preprocessing_params(config))
    return Classifier(backbone, width, num_classes, config.model.dropout)


def training_encoder(
    config: RecipeConfig, params: dict[str, Any], out_dir: Path
) -> tuple[Encoder, list[Path]]:
    """The serving encoder for this recipe, and the asset files the bundle must carry.

    The backbone writes its assets (e.g. a text tokenizer) to `out_dir` first; the modality's
    encoder then reads them from there, exactly as a server reads them from the bundle.
    """
    assets: list[Path] = _family(config).backbone_assets(config, out_dir)
    return get_modality(config.modality).encoder(params, out_dir), assets
