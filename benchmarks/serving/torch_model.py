"""The benchmark network in PyTorch, with torchvision preprocessing: what the torch servers run.

Same weights as the resnet18 bundle's ONNX model (see `artifacts.py`), same resize/crop/normalise
parameters, expressed the way a seed project writes them: a torchvision `Compose`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms

from mlfactory.config.schema import ModelConfig
from mlfactory.training.backbones.image import build_image_backbone
from mlfactory.training.network import Classifier, InferenceGraph


def load_network(weights_dir: Path) -> tuple[InferenceGraph, dict[str, Any]]:
    """The classifier (softmax outputs, eval mode, CPU) and its network.json."""
    spec = json.loads((weights_dir / "network.json").read_text())
    backbone, width = build_image_backbone(
        ModelConfig(backbone=spec["backbone"], pretrained="none")
    )
    net = Classifier(backbone, width, spec["num_labels"], spec["dropout"])
    net.load_state_dict(load_file(str(weights_dir / "classifier.safetensors")))
    return InferenceGraph(net).eval(), spec


def build_transform(preprocessing: dict[str, Any]) -> transforms.Compose:
    """torchvision equivalent of the bundle's image preprocessing."""
    return transforms.Compose(
        [
            transforms.Resize(int(preprocessing["resize_size"])),
            transforms.CenterCrop(int(preprocessing["crop_size"])),
            transforms.ToTensor(),
            transforms.Normalize(preprocessing["mean"], preprocessing["std"]),
        ]
    )


def load_image(data: bytes) -> Image.Image:
    """Decode upload bytes to RGB (transparent images on white, as the bundle does)."""
    image = Image.open(io.BytesIO(data))
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_json(labels: list[str], probabilities: torch.Tensor) -> list[dict[str, Any]]:
    """One {label, score, probabilities} dict per row, like mlfactory's API answers."""
    rows = []
    for row in probabilities.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        rows.append(
            {
                "label": labels[best],
                "score": row[best],
                "probabilities": dict(zip(labels, row, strict=True)),
            }
        )
    return rows
