"""ONNX export parity: the check passes on a faithful export and rejects real export bugs.

A faithful export differs from PyTorch only by fp32 kernel differences, which vary between CPUs
(AVX2, AVX-512, VNNI): the suite also runs with torch, oneDNN and numpy forced to AVX2
(`pytest -m numerics` under the variables of scripts/test.sh). The bugs below are real ones:
weights that are not the exported ones, a model left in training mode, and a bundle whose
preprocessing is not what the model was trained on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlfactory.bundle import META_FILE, load_bundle
from mlfactory.config.loader import load_recipe_from_dict
from mlfactory.errors import BundleError
from mlfactory.predictor import Predictor
from mlfactory.training.backbones import build_classifier
from mlfactory.training.export import PARITY_RTOL, check_parity, parity_spread
from mlfactory.training.network import InferenceGraph
from mlfactory.training.train import TrainResult
from tests.numerics import assert_parity_recorded, assert_sums_to_one
from tests.training_path import trained_graph, training_inputs

pytestmark = pytest.mark.numerics


def test_onnx_runtime_matches_torch_on_the_test_split(trained_digits: TrainResult) -> None:
    bundle = load_bundle(trained_digits.bundle.path)
    test_items = trained_digits.dataset.split("test")
    export = bundle.meta.export
    assert_parity_recorded(export, len(test_items))

    encoder = training_inputs(trained_digits, []).encoder
    spread = parity_spread(trained_graph(trained_digits), bundle, encoder, test_items)
    assert spread.within_tolerance
    predictor = Predictor(bundle)
    out = predictor.run([predictor.encode(item.read_bytes()) for item in test_items[:8]])
    assert out.probabilities.shape == (8, 10)
    for row in out.probabilities:
        assert_sums_to_one(row, labels=10)
    assert out.embeddings.shape[0] == 8 and out.embeddings.shape[1] > 0


def test_parity_check_rejects_weights_that_are_not_the_exported_ones(
    trained_digits: TrainResult,
) -> None:
    """The network before training (as if the best weights had never been loaded)."""
    config = load_recipe_from_dict(trained_digits.bundle.meta.config).config
    torch.manual_seed(0)
    untrained = InferenceGraph(build_classifier(config, 10)).eval()
    encoder = training_inputs(trained_digits, []).encoder
    bundle = load_bundle(trained_digits.bundle.path)
    with pytest.raises(BundleError, match="differs from PyTorch"):
        check_parity(untrained, bundle, encoder, trained_digits.dataset.split("test"))


def test_parity_check_rejects_a_model_left_in_training_mode(trained_digits: TrainResult) -> None:
    """BatchNorm on batch statistics instead of its running ones: a forgotten `.eval()`."""
    graph = trained_graph(trained_digits).train()
    encoder = training_inputs(trained_digits, []).encoder
    bundle = load_bundle(trained_digits.bundle.path)
    with pytest.raises(BundleError, match="differs from PyTorch"):
        check_parity(graph, bundle, encoder, trained_digits.dataset.split("test"))


@pytest.mark.parametrize(
    "preprocessing",
    [
        {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},  # the other common normalisation
        {"mean": [0.406, 0.456, 0.485], "std": [0.225, 0.224, 0.229]},  # BGR order
    ],
    ids=["mean-std-0.5", "channels-reversed"],
)
def test_parity_check_rejects_a_bundle_that_normalises_differently(
    trained_digits: TrainResult, preprocessing: dict[str, list[float]], tmp_path: Path
) -> None:
    """Torch sees training's normalisation; the bundle (as a server reads it) another one."""
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    meta = json.loads((copy / META_FILE).read_text())
    assert meta["preprocessing"]["mean"] != preprocessing["mean"]
    meta["preprocessing"].update(preprocessing)
    (copy / META_FILE).write_text(json.dumps(meta))
    encoder = training_inputs(trained_digits, []).encoder
    with pytest.raises(BundleError, match="differs from PyTorch"):
        check_parity(
            trained_graph(trained_digits),
            load_bundle(copy),
            encoder,
            trained_digits.dataset.split("test"),
        )


def test_parity_check_rejects_one_logit_moved_by_a_fifth(trained_digits: TrainResult) -> None:
    """A change far smaller than the bugs above still fails: class 0's logit + 0.2."""
    graph = trained_graph(trained_digits)
    with torch.no_grad():
        graph.classifier.head.bias[0] += 0.2
    encoder = training_inputs(trained_digits, []).encoder
    bundle = load_bundle(trained_digits.bundle.path)
    spread = parity_spread(graph, bundle, encoder, trained_digits.dataset.split("test"))
    assert not spread.within_tolerance
    # What the check saw is that change: p_0 grows by e**0.2 / Z and the others shrink by 1 / Z,
    # Z = 1 + p_0 * (e**0.2 - 1), so no probability moves by more than e**0.2 - 1 (+22 %), apart
    # from the kernel noise the faithful export passes the check with (< PARITY_RTOL).
    assert spread.max_rel_diff <= np.exp(0.2) * (1 + PARITY_RTOL) - 1
