"""Modalities: each owns its decoding and the one preprocessing path shared by training and serving.

Every modality exposes an *encoder*: a callable that turns one raw input (bytes of a file, or a
text) into a dict of fixed-shape numpy arrays named after the ONNX model inputs. Batching is a
stack of those arrays. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Encoder(Protocol):
    """One raw input in, model input arrays (no batch axis) out."""

    modality: str

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]: ...

    def input_shapes(self) -> dict[str, list[int]]: ...


def get_encoder(
    modality: str, params: Mapping[str, Any], assets_dir: Path | None = None
) -> Encoder:
    """Build the encoder of a modality from its preprocessing parameters.

    Args:
        modality: "image", "text" or "audio".
        params: the preprocessing parameters stored in the bundle / recipe.
        assets_dir: folder holding modality assets (e.g. `tokenizer.json` for text).
    """
    if modality == "image":
        from mlfactory.modalities.image import ImageEncoder

        return ImageEncoder(params, assets_dir)
    if modality == "text":
        from mlfactory.modalities.text import TextEncoder

        return TextEncoder(params, assets_dir)
    if modality == "audio":
        from mlfactory.modalities.audio import AudioEncoder

        return AudioEncoder(params, assets_dir)
    from mlfactory.errors import BundleError

    raise BundleError(f"unsupported modality: '{modality}' (known: image, text, audio)")


def stack_inputs(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-item input dicts into one batch (all items share shapes)."""
    return {name: np.stack([item[name] for item in items]) for name in items[0]}
