"""Modalities: one object per kind of input owns everything specific to it (see `base.Modality`).

`get_modality("image")` returns the image modality; its module is imported on first use, so a
text server never imports Pillow's codecs or soundfile. Every modality's encoder turns one raw
input (the bytes of a file, or a text) into a dict of fixed-shape numpy arrays named after the
ONNX model inputs; batching is a stack of those arrays. Adding a modality: see
docs/architecture.md, "Adding a modality". Nothing here imports torch.
"""

from __future__ import annotations

import importlib

import numpy as np

from mlfactory.modalities.base import ApiInput, Augment, Baseline, Encoder, Modality

__all__ = [
    "MODALITY_NAMES",
    "ApiInput",
    "Augment",
    "Baseline",
    "Encoder",
    "Modality",
    "get_modality",
    "stack_inputs",
]

# name -> module defining `MODALITY`, an instance of its `Modality` subclass.
_MODULES = {
    "image": "mlfactory.modalities.image",
    "text": "mlfactory.modalities.text",
    "audio": "mlfactory.modalities.audio",
}
MODALITY_NAMES = tuple(_MODULES)


def get_modality(name: str) -> Modality:
    """The modality called `name`.

    Raises:
        ConfigError: no modality has that name.
    """
    module = _MODULES.get(name)
    if module is None:
        from mlfactory.errors import ConfigError

        raise ConfigError(f"modality: {name!r} is not one of {', '.join(MODALITY_NAMES)}")
    modality: Modality = importlib.import_module(module).MODALITY
    return modality


def stack_inputs(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-item input dicts into one batch (all items share shapes)."""
    return {name: np.stack([item[name] for item in items]) for name in items[0]}
