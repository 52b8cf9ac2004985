"""The classifier network: a modality backbone that yields an embedding, and a linear head.

Every modality's backbone maps its model inputs to a fixed-size embedding; the head is shared.
The exported ONNX graph returns both the class probabilities and the embedding (the embedding
is what drift monitoring compares).
"""

from __future__ import annotations

import torch
from torch import nn


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


class InferenceGraph(nn.Module):
    """What is exported to ONNX: probabilities and embedding from the model inputs."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.classifier.embed(*inputs)
        logits = self.classifier.head(embedding)
        return torch.softmax(logits, dim=-1), embedding
