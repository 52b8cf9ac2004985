"""The classifier network: a modality backbone that yields an embedding, and a linear head.

Every modality's backbone maps its model inputs to a fixed-size embedding; the head is shared.
The exported ONNX graph returns the class probabilities and the embedding (what drift
monitoring compares). A convolutional backbone also yields `early_features`: the mean and the
standard deviation of each channel of an early stage's feature map (the first at a quarter of
the input's resolution). Out-of-distribution scores read both: an early stage still sees the
input's texture, noise and blur, which the pooled embedding has learnt to ignore (Lee et al.,
2018; measured in docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlfactory.modalities import Encoder


class Classifier(nn.Module):
    """backbone(inputs) -> embedding -> dropout -> linear -> logits."""

    def __init__(
        self, backbone: nn.Module, embedding_dim: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embedding_dim, num_classes)

    def embed(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone(*inputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(*inputs)))


# The early stage: the first of a timm model's feature stages at this reduction or more.
EARLY_REDUCTION = 4


def early_stage(backbone: nn.Module) -> nn.Module | None:
    """The module whose output is the backbone's early feature map, or None (no such stage).

    A backbone may name it (`early_stage()`); a timm model has it in its `feature_info`.
    Transformer encoders of text have none: their early layers add nothing to the embedding's
    score (measured).
    """
    named = getattr(backbone, "early_stage", None)
    if callable(named):
        stage = named()
        return stage if isinstance(stage, nn.Module) else None
    info = getattr(backbone, "feature_info", None)
    if not isinstance(info, list):
        return None
    for entry in info:
        if isinstance(entry, dict) and int(entry.get("reduction", 0)) >= EARLY_REDUCTION:
            return backbone.get_submodule(str(entry["module"]))
    return None


def channel_statistics(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) or (B, N, C) -> (B, 2C): each channel's mean, then its standard deviation.

    Reduced in place over the other axes, without flattening them first: flattening exports as
    four shape nodes, and every node costs the model call a few microseconds.
    """
    axes: tuple[int, ...]
    if features.dim() == 4:
        axes, channels = (2, 3), 1
    elif features.dim() == 3:
        axes, channels = (1,), 2
    else:
        raise ValueError(f"an early stage gave a {features.dim()}-d tensor; expected 3-d or 4-d")
    mean = features.mean(dim=axes, keepdim=True)
    deviations = features - mean
    spread = (deviations * deviations).mean(dim=axes, keepdim=True).sqrt()
    return torch.cat([mean, spread], dim=channels).flatten(1)


class InferenceGraph(nn.Module):
    """What is exported to ONNX: probabilities, embedding and (when the backbone has an early
    stage) its channel statistics, from the model inputs."""

    def __init__(self, classifier: Classifier, early_features: bool = True) -> None:
        super().__init__()
        self.classifier = classifier
        self._early: list[torch.Tensor] = []
        stage = early_stage(classifier.backbone) if early_features else None
        self.has_early_features = stage is not None
        if stage is not None:
            stage.register_forward_hook(lambda _module, _inputs, output: self._early.append(output))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._early.clear()
        embedding = self.classifier.embed(*inputs)
        probabilities = torch.softmax(self.classifier.head(embedding), dim=-1)
        if not self.has_early_features:
            return probabilities, embedding
        return probabilities, embedding, channel_statistics(self._early[-1])


def example_inputs(encoder: Encoder, batch: int) -> tuple[torch.Tensor, ...]:
    """All-zero model inputs of the encoder's shapes and dtypes, in the order the network takes
    them: what the ONNX export and the pruning trace the network with."""
    shapes, dtypes = encoder.input_shapes(), encoder.input_dtypes()
    return tuple(
        torch.from_numpy(np.zeros((batch, *shape), dtype=dtypes[name]))
        for name, shape in shapes.items()
    )


def parameters_outside_the_output(
    network: nn.Module, inputs: tuple[torch.Tensor, ...]
) -> list[str]:
    """The names of the network's trained parameters (those that require gradients) that its
    output does not depend on for `inputs`: the ones DDP refuses to train."""
    named = [(name, p) for name, p in network.named_parameters() if p.requires_grad]
    with torch.enable_grad():
        output = network(*inputs)
        gradients = torch.autograd.grad(
            output.float().sum(), [p for _, p in named], allow_unused=True
        )
    return [name for (name, _), gradient in zip(named, gradients, strict=True) if gradient is None]
