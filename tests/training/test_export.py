"""ONNX export parity: the check passes on a faithful export and catches an unfaithful one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlfactory.bundle import load_bundle
from mlfactory.config.loader import preprocessing_params
from mlfactory.errors import BundleError
from mlfactory.modalities import get_modality
from mlfactory.predictor import Predictor
from mlfactory.training.backbones import build_classifier
from mlfactory.training.export import check_parity
from mlfactory.training.network import InferenceGraph
from mlfactory.training.train import TrainResult


def test_onnx_runtime_matches_torch_on_the_test_split(trained_digits: TrainResult) -> None:
    bundle = load_bundle(trained_digits.bundle.path)
    config = trained_digits.dataset
    assert bundle.meta.export["parity_max_abs_diff"] <= 1e-4
    predictor = Predictor(bundle)
    items = config.split("test")[:8]
    out = predictor.run([predictor.encode(item.read_bytes()) for item in items])
    assert out.probabilities.shape == (8, 10)
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert out.embeddings.shape[0] == 8 and out.embeddings.shape[1] > 0


def test_parity_check_rejects_a_model_that_differs(trained_digits: TrainResult) -> None:
    recipe_config = trained_digits.bundle.meta.config
    from mlfactory.config.loader import load_recipe_from_dict

    config = load_recipe_from_dict(recipe_config).config
    other = build_classifier(config, 10)  # different weights from the exported model
    with torch.no_grad():
        other.head.weight.mul_(50.0)
    encoder = get_modality("image").encoder(preprocessing_params(config))
    with pytest.raises(BundleError, match="differs from PyTorch"):
        check_parity(
            InferenceGraph(other).eval(),
            load_bundle(trained_digits.bundle.path),
            encoder,
            trained_digits.dataset.split("test")[:16],
        )
