"""Structured pruning (`model.prune_channels`): channels removed from the backbone's convolutions,
or neurons from a transformer's feed-forward layers.

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
"""

from __future__ import annotations

from dataclasses import dataclass

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


def prune_classifier(net: Classifier, encoder: Encoder, share: float) -> PrunedNetwork:
    """Remove `share` of the channels of `net`'s backbone convolutions, or of the neurons of the
    layers it names (see the module docstring).

    Raises:
        ConfigError: the backbone has neither convolutions nor layers it names to prune, or
            Torch-Pruning cannot trace it.
    """
    import torch_pruning as tp

    backbone = net.backbone
    roots = prune_roots(backbone)
    if any(isinstance(module, CONVOLUTIONS) for module in backbone.modules()):
        root_types: list[type[nn.Module]] = list(CONVOLUTIONS)
        ignored, what = ignored_layers(backbone), "convolution channels"
    elif roots:
        # Only the named linear layers are roots: every other one keeps its outputs.
        kept = {id(module) for module in roots}
        root_types = [nn.Linear]
        ignored = [m for m in backbone.modules() if isinstance(m, nn.Linear) and id(m) not in kept]
        what = "feed-forward neurons"
    else:
        raise ConfigError(
            "model.prune_channels: the backbone has neither convolutions nor feed-forward layers "
            "that mlfactory knows how to prune (`mlfactory quantize` makes an int8 bundle of any "
            "backbone)"
        )
    before = _parameters(net)
    example = example_inputs(encoder, batch=1)
    training = backbone.training
    backbone.eval()  # tracing runs a forward: batch-norm statistics must not move
    try:
        pruner = tp.pruner.BasePruner(
            backbone,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=share,
            root_module_types=root_types,
            ignored_layers=ignored,
            round_to=ROUND_TO,
        )
        pruner.step()
        with torch.no_grad():
            width = int(backbone(*example).shape[-1])
    except (RuntimeError, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise ConfigError(
            f"model.prune_channels: Torch-Pruning could not prune this backbone: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    finally:
        backbone.train(training)
    head = net.head
    pruned = Classifier(backbone, width, head.out_features, float(net.dropout.p))
    return PrunedNetwork(pruned, before, _parameters(pruned), head.in_features, width, what)


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
