"""What `publish` exports after the fit: a float32 bundle whatever the training precision, and
nothing from a network that the fit left with NaN or infinite weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.predictor import Predictor
from mlfactory.training.backbones import build_classifier
from mlfactory.training.publish import check_finite_weights
from mlfactory.training.train import train
from tests.conftest import SMALL_NETWORK, fast_digits_overrides
from tests.numerics import assert_parity_recorded


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_a_run_trained_in_another_precision_exports_a_float32_bundle(
    precision: str, digit_folder: Path, tmp_path: Path
) -> None:
    """These precisions keep the weights in their own type; the export fed them float32 inputs
    and stopped with a traceback."""
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, 1),
        *SMALL_NETWORK,
        f"trainer.precision={precision}",
    ]
    result = train(load_recipe("digits", overrides), tmp_path / "run", progress=False)
    assert result.bundle is not None
    assert_parity_recorded(result.bundle.meta.export, len(result.dataset.split("test")))
    image = next((digit_folder / "7").glob("*.png")).read_bytes()
    (prediction,) = Predictor(result.bundle).predict([image])
    assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-5
    assert np.isfinite(list(prediction.probabilities.values())).all()


def test_weights_that_are_not_finite_are_refused_with_what_to_change() -> None:
    config = load_recipe("digits", SMALL_NETWORK).config
    net = build_classifier(config, 10)
    check_finite_weights(net, "32-true")  # as built: finite
    name, weight = list(net.named_parameters())[3]
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    with pytest.raises(ConfigError) as raised:
        check_finite_weights(net, "32-true")
    message = str(raised.value)
    assert message.startswith("training diverged: 1 of the network's weight tensors hold NaN")
    assert f"(the first: {name})" in message and "lower trainer.lr" in message
    with pytest.raises(ConfigError, match="16-true trains in float16 without loss scaling"):
        check_finite_weights(net, "16-true")
