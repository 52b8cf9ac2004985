"""Backbones per modality; each returns (module mapping inputs -> embedding, embedding width)."""

from __future__ import annotations

from torch import nn

from mlfactory.config.schema import RecipeConfig
from mlfactory.training.network import Classifier


def build_classifier(config: RecipeConfig, num_classes: int) -> Classifier:
    """The recipe's backbone with a fresh classification head for `num_classes` labels."""
    backbone: nn.Module
    if config.modality == "image":
        from mlfactory.training.backbones.image import build_image_backbone

        backbone, width = build_image_backbone(config.model)
    elif config.modality == "text":
        from mlfactory.config.loader import preprocessing_params
        from mlfactory.training.backbones.text import build_text_backbone

        max_length = int(preprocessing_params(config)["max_length"])
        backbone, width = build_text_backbone(config.model, max_length)
    elif config.modality == "audio":
        from mlfactory.training.backbones.audio import build_audio_backbone

        backbone, width = build_audio_backbone(config)
    else:
        raise ValueError(f"no backbone for modality {config.modality}")
    return Classifier(backbone, width, num_classes, config.model.dropout)
