"""Backbone construction: the width each backbone reports is the width it outputs."""

from __future__ import annotations

import pytest
import torch

from mlfactory.config.schema import ModelConfig
from mlfactory.training.backbones.image import build_image_backbone


@pytest.mark.parametrize(
    ("backbone", "width"),
    [
        ("resnet18", 512),
        # VGG's pre-logits layers make it output 4096 wide although `num_features` says 512:
        # the seed's emotions model (VGG19) needs the head sized to what comes out.
        ("vgg11", 4096),
    ],
)
def test_image_backbone_reports_the_width_it_outputs(backbone: str, width: int) -> None:
    model, reported = build_image_backbone(ModelConfig(backbone=backbone, pretrained="none"))
    with torch.no_grad():
        output = model.eval()(torch.zeros(1, 3, 32, 32))
    assert reported == width
    assert output.shape == (1, reported)
