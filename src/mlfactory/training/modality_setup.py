"""The encoder a training run uses, plus the asset files it needs to travel into the bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlfactory.config.schema import RecipeConfig
from mlfactory.modalities import Encoder, get_encoder


def training_encoder(
    config: RecipeConfig, params: dict[str, Any], out_dir: Path
) -> tuple[Encoder, list[Path]]:
    """Build the serving encoder for this recipe; return it with the assets the bundle must carry.

    Image and audio encoders are fully described by `params`; text encoders also need the
    backbone's tokenizer, which is written to `out_dir` and copied into the bundle.
    """
    if config.modality == "image":
        return get_encoder("image", params), []
    if config.modality == "audio":
        return get_encoder("audio", params), []
    if config.modality == "text":
        from mlfactory.training.backbones.text import write_tokenizer

        tokenizer = write_tokenizer(config.model, out_dir)
        return get_encoder("text", params, out_dir), [tokenizer]
    raise ValueError(f"unsupported modality: {config.modality}")
