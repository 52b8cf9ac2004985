"""The memory layout a network trains in: channels-last for convolutional networks.

A 2-d convolution's kernels (oneDNN on CPUs, cuDNN on GPUs) work on NHWC tensors natively;
given NCHW they reorder every feature map forth and back, forward and backward. Weights in
channels-last make every convolution run in NHWC (PyTorch follows the layout of the input or of
the weight), which trained efficientnet_lite0 1.7-1.9x faster per step on this project's CPUs
and is what bf16 needs to pay off on a GPU (docs/benchmarks.md). Only the layout changes, not
the values; the exported ONNX graph has no layout, so the bundle is the same either way.
"""

from __future__ import annotations

import torch
from torch import nn


def has_2d_convolutions(net: nn.Module) -> bool:
    """True when some layer of `net` is a 2-d convolution."""
    return any(isinstance(module, nn.Conv2d) for module in net.modules())


def training_memory_format(net: nn.Module, setting: str) -> torch.memory_format:
    """The layout `trainer.memory_format` asks for: "auto" is channels-last for a network with
    2-d convolutions (image and audio CNNs) and contiguous for the rest (text transformers,
    where the layout of 2-d weights means nothing).
    """
    if setting == "channels_last" or (setting == "auto" and has_2d_convolutions(net)):
        return torch.channels_last
    return torch.contiguous_format


def to_memory_format(net: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """`net` with its 4-d weights in `memory_format` (in place; other tensors are untouched)."""
    return net.to(memory_format=memory_format)
