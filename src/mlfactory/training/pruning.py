"""Structured pruning (`model.prune_channels`, `model.prune_heads`): channels removed from the
backbone's convolutions, or neurons from a transformer's feed-forward layers, and whole heads
from a transformer's attention.

Torch-Pruning traces the network once on the encoder's input shapes, groups each convolution's
output channels with everything that has to shrink with them (its batch norm, the next layer's
input channels, the channels a residual sum or a depthwise convolution ties to them), and
removes the given share of each group's channels, those whose weights have the least L1 norm
summed over the group. What remains is an ordinary dense network with fewer channels: fewer
parameters, a smaller ONNX file and less work for every kernel on every CPU, unlike zeroed
weights, which dense kernels multiply all the same.

It runs before training, on the pretrained weights; the network is then fine-tuned as usual to
recover what the removed channels carried (`model.freeze_backbone` must stay false). The
embedding narrows with the last convolution, so the classification head is built anew for
the width left. A backbone with convolutions has only them pruned: the linear layers and
attention of a CNN-transformer keep their widths. A backbone without convolutions may name the
linear layers to narrow instead (`prune_roots()`): the text recipes' transformer names each
block's feed-forward expansion, whose neurons go with the matching inputs of the projection
back; attention and the hidden width stay whole, and so does the embedding. A backbone may
name layers to keep whole (`prune_ignored()`: the CNN-transformer's last convolution, whose
channels are flattened with the mel bands). Every process of a distributed run prunes the same
weights the same way, and `--resume` prunes again before loading the checkpoint, whose shapes
are the pruned ones.

`model.prune_heads` removes that share of each attention block's heads (rounded up), those whose
query, key and value rows and output-projection columns have the least L1 norm together; the
heads left keep their width and weights, so each block computes fewer, unchanged heads. A
backbone names its attention blocks (`attention_heads()`): the text recipes' transformer names
each block's self-attention. Heads go first, then the feed-forward neurons, each from its own
trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlfactory.errors import ConfigError
from mlfactory.modalities import Encoder
from mlfactory.training.network import Classifier, example_inputs

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d)
# Channel counts stay multiples of 8: kernels vectorise over channels in blocks of 8 or 16.
ROUND_TO = 8


@dataclass
class PrunedNetwork:
    """The pruned classifier, and what pruning removed."""

    net: Classifier
    parameters_before: int
    parameters_after: int
    width_before: int
    width_after: int
    pruned: str = "convolution channels"  # what was removed

    def summary(self, share: float) -> str:
        return (
            f"pruned {share:.0%} of the backbone's {self.pruned} (least L1 norm, "
            f"Torch-Pruning): {self.parameters_before / 1e6:.2f} M -> "
            f"{self.parameters_after / 1e6:.2f} M parameters, embedding {self.width_before} -> "
            f"{self.width_after}"
        )


@dataclass
class PrunedHeads:
    """The classifier with fewer attention heads, and how many each block had and has."""

    net: Classifier
    parameters_before: int
    parameters_after: int
    heads_before: int
    heads_after: int

    def summary(self, share: float) -> str:
        return (
            f"pruned {share:.0%} of the backbone's attention heads (least L1 norm, "
            f"Torch-Pruning): {self.parameters_before / 1e6:.2f} M -> "
            f"{self.parameters_after / 1e6:.2f} M parameters, {self.heads_before} -> "
            f"{self.heads_after} heads per block"
        )


def prune_classifier(net: Classifier, encoder: Encoder, share: float) -> PrunedNetwork:
    """Remove `share` of the channels of `net`'s backbone convolutions, or of the neurons of the
    layers it names (see the module docstring).

    Raises:
        ConfigError: the backbone has neither convolutions nor layers it names to prune, or
            Torch-Pruning cannot trace it.
    """
    backbone = net.backbone
    roots = prune_roots(backbone)
    if any(isinstance(module, CONVOLUTIONS) for module in backbone.modules()):
        root_types: list[type[nn.Module]] = list(CONVOLUTIONS)
        ignored, what = ignored_layers(backbone), "convolution channels"
    elif roots:
        # Only the named linear layers are roots: every other one keeps its outputs.
        root_types = [nn.Linear]
        ignored = _linear_layers_except(backbone, roots)
        what = "feed-forward neurons"
    else:
        raise ConfigError(
            "model.prune_channels: the backbone has neither convolutions nor feed-forward layers "
            "that mlfactory knows how to prune (`mlfactory quantize` makes an int8 bundle of any "
            "backbone)"
        )
    before = _parameters(net)
    example = example_inputs(encoder, batch=1)
    with _tracing(backbone, "model.prune_channels: Torch-Pruning could not prune this backbone"):
        _magnitude_pruner(backbone, example, share, root_types, ignored, round_to=ROUND_TO).step()
        with torch.no_grad():
            width = int(backbone(*example).shape[-1])
    head = net.head
    pruned = Classifier(backbone, width, head.out_features, float(net.dropout.p))
    return PrunedNetwork(pruned, before, _parameters(pruned), head.in_features, width, what)


def prune_attention_heads(net: Classifier, encoder: Encoder, share: float) -> PrunedHeads:
    """Remove `share` of the heads of each attention block `net`'s backbone names (rounded up;
    see the module docstring). The classifier is changed in place and returned.

    Raises:
        ConfigError: the backbone names no attention blocks, a block would lose every head, or
            Torch-Pruning cannot trace it.
    """
    backbone = net.backbone
    blocks = attention_blocks(backbone)
    if not blocks:
        raise ConfigError(
            "model.prune_heads: the backbone has no attention heads that mlfactory knows how to "
            "prune (the text recipes' Hugging Face transformers have; `model.prune_channels` "
            "narrows convolutions)"
        )
    heads_before = head_count(blocks[0])
    if math.ceil(share * heads_before) >= heads_before:
        raise ConfigError(
            f"model.prune_heads: {share:g} of {heads_before} heads rounds up to all of them: "
            f"keep at least one (at most {(heads_before - 1) / heads_before:.2f})"
        )
    projections = [layer for block in blocks for layer in _query_key_value(block)]
    before = _parameters(net)
    example = example_inputs(encoder, batch=1)
    failed = "model.prune_heads: Torch-Pruning could not prune this backbone's attention"
    with _tracing(backbone, failed):
        pruner = _magnitude_pruner(
            backbone,
            example,
            # Whole heads only: a width share above zero lets Torch-Pruning visit the attention
            # groups, and prune_head_dims=False keeps each head's width.
            share,
            [nn.Linear],
            _linear_layers_except(backbone, projections),
            num_heads={
                layer: head_count(block) for block in blocks for layer in _query_key_value(block)
            },
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=share,
        )
        pruner.step()
        for block in blocks:
            # The attributes the block keeps beside its weights (the forward infers the head
            # count from the projections' width).
            query = _query_key_value(block)[0]
            block.num_attention_heads = pruner.num_heads[query]
            block.all_head_size = query.out_features
        with torch.no_grad():
            backbone(*example)
    heads_after = head_count(blocks[0])
    return PrunedHeads(net, before, _parameters(net), heads_before, heads_after)


def _magnitude_pruner(
    backbone: nn.Module,
    example: tuple[torch.Tensor, ...],
    share: float,
    root_types: list[type[nn.Module]],
    ignored: list[nn.Module],
    **options: Any,
) -> Any:
    """Torch-Pruning's pruner removing `share` of each group rooted in a layer of `root_types`
    (not `ignored`), those of least L1 norm summed over the group."""
    import torch_pruning as tp

    return tp.pruner.BasePruner(
        backbone,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=share,
        root_module_types=root_types,
        ignored_layers=ignored,
        **options,
    )


@contextmanager
def _tracing(backbone: nn.Module, failed: str) -> Iterator[None]:
    """Prune `backbone` in eval mode (tracing runs a forward: batch-norm statistics must not
    move); a failure of Torch-Pruning is a ConfigError of one line starting with `failed`."""
    training = backbone.training
    backbone.eval()
    try:
        yield
    except (RuntimeError, ValueError, KeyError, IndexError, AssertionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"{failed}: {type(exc).__name__}: {detail}") from None
    finally:
        backbone.train(training)


def _linear_layers_except(backbone: nn.Module, kept: list[nn.Module]) -> list[nn.Module]:
    """Every linear layer of `backbone` but those in `kept`: the ones Torch-Pruning leaves
    whole."""
    names = {id(layer) for layer in kept}
    return [m for m in backbone.modules() if isinstance(m, nn.Linear) and id(m) not in names]


def attention_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The self-attention blocks a backbone names (`attention_heads()`): each with `query`,
    `key` and `value` linear layers and its `num_attention_heads`; none for a timm model."""
    named = getattr(backbone, "attention_heads", None)
    blocks = named() if callable(named) else []
    return [
        block
        for block in blocks
        if isinstance(getattr(block, "num_attention_heads", None), int)
        and len(_query_key_value(block)) == 3
    ]


def head_count(block: nn.Module) -> int:
    """An attention block's number of heads."""
    return int(vars(block)["num_attention_heads"])


def _query_key_value(block: nn.Module) -> list[nn.Module]:
    layers = (getattr(block, name, None) for name in ("query", "key", "value"))
    return [layer for layer in layers if isinstance(layer, nn.Linear)]


def prune_roots(backbone: nn.Module) -> list[nn.Module]:
    """The linear layers a backbone without convolutions asks to narrow (`prune_roots()`), e.g.
    a transformer's feed-forward expansions; none for a timm model."""
    named = getattr(backbone, "prune_roots", None)
    layers = named() if callable(named) else []
    return [layer for layer in layers if isinstance(layer, nn.Linear)]


def ignored_layers(backbone: nn.Module) -> list[nn.Module]:
    """The layers a backbone asks to keep whole (`prune_ignored()`), e.g. a convolution whose
    output is reshaped in a way the trace cannot follow; none for a timm model."""
    named = getattr(backbone, "prune_ignored", None)
    layers = named() if callable(named) else []
    return [layer for layer in layers if isinstance(layer, nn.Module)]


def _parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
