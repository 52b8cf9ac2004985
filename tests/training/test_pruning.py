"""`model.prune_channels` and `model.prune_heads`: structured pruning (Torch-Pruning) before
fine-tuning, of the convolutions of the recipe's real pretrained efficientnet_lite0, and of the
feed-forward neurons and attention heads of the text recipes' real pretrained MiniLM."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlfactory.config.loader import load_recipe, preprocessing_params
from mlfactory.errors import ConfigError
from mlfactory.monitoring.profile import load_profile
from mlfactory.output import PHASE_LOGGER
from mlfactory.predictor import Predictor
from mlfactory.training.backbones import build_classifier, training_encoder
from mlfactory.training.network import Classifier
from mlfactory.training.pruning import prune_attention_heads, prune_classifier
from mlfactory.training.train import train
from tests.numerics import assert_parity_recorded

from ..conftest import fast_digits_overrides

SMALL_INPUTS = ["preprocess.resize_size=32", "preprocess.crop_size=32"]


def test_pruning_keeps_the_channels_of_largest_weights_as_they_were(tmp_path: Path) -> None:
    config = load_recipe("digits", SMALL_INPUTS).config
    net = build_classifier(config, 10)
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    stem = net.backbone.conv_stem.weight.detach().clone()
    statistics = net.backbone.bn1.running_mean.clone()

    pruned = prune_classifier(net, encoder, 0.5)

    backbone = pruned.net.backbone
    kept = backbone.conv_stem.weight.detach()
    assert kept.shape == (16, 3, 3, 3)  # half of the stem's 32 filters
    # Each kept filter is an original one, unchanged; so are its batch-norm statistics (the
    # trace ran in eval mode).
    rows = original_rows(stem.flatten(1), kept.flatten(1))
    assert rows == sorted(set(rows))
    assert torch.equal(backbone.bn1.running_mean, statistics[rows])
    # The pretrained filters kept carry far more weight than the ones removed (the L1 norm,
    # summed with the layers tied to them).
    norms = stem.abs().flatten(1).sum(1)
    removed = [row for row in range(len(stem)) if row not in rows]
    assert norms[rows].mean() > 2 * norms[removed].mean()
    # A dense network with fewer channels, and a head for the narrower embedding.
    assert pruned.parameters_after < 0.3 * pruned.parameters_before
    assert (pruned.width_before, pruned.width_after) == (1280, 640)
    assert pruned.net.head.in_features == 640 and pruned.net.head.out_features == 10
    with torch.no_grad():
        logits = pruned.net.eval()(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)


def test_a_pruned_run_exports_a_smaller_bundle_that_serves_and_resumes(
    digit_folder: Path, tmp_path: Path, trained_digits: Any, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [*fast_digits_overrides(digit_folder, tmp_path, epochs=1)]
    with caplog.at_level(logging.INFO, logger=PHASE_LOGGER):
        result = train(
            load_recipe("digits", [*overrides, "model.prune_channels=0.5"]),
            tmp_path / "run",
            progress=False,
        )
    assert "model: pruned 50% of the backbone's convolution channels" in caplog.text
    assert "3.38 M -> 0.90 M parameters, embedding 1280 -> 640" in caplog.text
    bundle = result.bundle
    assert bundle.meta.config["model"]["prune_channels"] == 0.5
    assert_parity_recorded(bundle.meta.export, len(result.dataset.split("test")))
    # The ONNX file of the same recipe unpruned is more than twice as large.
    assert 2 * bundle.model_path.stat().st_size < trained_digits.bundle.model_path.stat().st_size
    # It serves, with monitoring fitted on the pruned network's narrower embedding.
    predictor = Predictor(bundle)
    profile = load_profile(bundle.path)
    assert profile is not None and profile.drift.projection.mean.shape == (640,)
    predictor.profile = profile  # as the server loads it
    assert predictor.graph_scorer == profile.ood.fingerprint()  # the score in the ONNX graph
    image = next((digit_folder / "7").iterdir()).read_bytes()
    (prediction,) = predictor.predict([image])
    assert prediction.label in bundle.meta.labels
    output = predictor.run([predictor.encode(image)])
    assert output.embeddings.shape == (1, 640)
    assert output.ood_scores is not None and np.isfinite(output.ood_scores).all()

    # --resume builds and prunes the network again: the checkpoint's shapes are the pruned ones;
    # a second epoch continues the MLflow run and exports a model of the same size.
    resumed = train(
        load_recipe("digits", [*overrides, "model.prune_channels=0.5", "trainer.max_epochs=2"]),
        result.out_dir,
        resume=True,
        force=True,
        progress=False,
    )
    assert resumed.mlflow_run_id == result.mlflow_run_id
    assert resumed.bundle.model_path.stat().st_size == bundle.model_path.stat().st_size


def test_a_transformer_loses_feed_forward_neurons_of_least_weight_only(tmp_path: Path) -> None:
    """The text recipes' MiniLM: each block's feed-forward expansion is halved, keeping the
    neurons of largest weight as they were; attention and the hidden width stay whole."""
    config = load_recipe("news", ["preprocess.max_length=32"]).config
    net = build_classifier(config, 8)
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    blocks = net.backbone.model.encoder.layer
    expansion = blocks[0].intermediate.dense.weight.detach().clone()
    back = blocks[0].output.dense.weight.detach().clone()
    query = blocks[0].attention.self.query.weight.detach().clone()

    pruned = prune_classifier(net, encoder, 0.5)

    assert pruned.pruned == "feed-forward neurons"
    for block in pruned.net.backbone.model.encoder.layer:
        assert block.intermediate.dense.out_features == 768  # of 1536
        assert block.output.dense.in_features == 768
        assert block.output.dense.out_features == 384  # the hidden width
    first = pruned.net.backbone.model.encoder.layer[0]
    kept = first.intermediate.dense.weight.detach()
    rows = original_rows(expansion, kept)
    assert rows == sorted(set(rows))
    # The projection back keeps the matching inputs, and attention is untouched.
    assert torch.equal(first.output.dense.weight.detach(), back[:, rows])
    assert torch.equal(first.attention.self.query.weight.detach(), query)
    norms = expansion.abs().sum(1) + back.abs().sum(0)  # L1 over the group
    removed = [row for row in range(len(expansion)) if row not in rows]
    assert norms[rows].min() >= norms[removed].max()
    assert (pruned.width_before, pruned.width_after) == (384, 384)
    assert pruned.net.head.in_features == 384
    inputs = {name: torch.from_numpy(a[None]) for name, a in encoder(b"Oil prices rose.").items()}
    with torch.no_grad():
        assert pruned.net.eval()(*inputs.values()).shape == (1, 8)


def test_a_transformer_loses_whole_attention_heads_of_least_weight(tmp_path: Path) -> None:
    """A quarter of MiniLM's 12 heads per block go: the same whole heads from the query, key
    and value projections and the output projection's inputs, those of least L1 norm; the
    network then computes exactly what the original does with those heads silenced."""
    config = load_recipe("news", ["preprocess.max_length=32"]).config
    net = build_classifier(config, 8)
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    first = net.backbone.model.encoder.layer[0].attention
    before = {
        name: getattr(first.self, name).weight.detach().clone()
        for name in ("query", "key", "value")
    }
    output = first.output.dense.weight.detach().clone()
    expansion = net.backbone.model.encoder.layer[0].intermediate.dense.weight.detach().clone()
    inputs = [torch.from_numpy(a[None]) for a in encoder(b"Oil prices rose sharply.").values()]
    original = copy.deepcopy(net).eval()

    pruned = prune_attention_heads(net, encoder, 0.25)

    assert (pruned.heads_before, pruned.heads_after) == (12, 9)  # 3 of 12 per block
    assert pruned.summary(0.25) == (
        "pruned 25% of the backbone's attention heads (least L1 norm, Torch-Pruning): "
        "22.72 M -> 21.83 M parameters, 12 -> 9 heads per block"
    )
    for block in pruned.net.backbone.model.encoder.layer:
        attention = block.attention
        assert attention.self.num_attention_heads == 9
        assert attention.self.query.out_features == 9 * 32  # each head keeps its 32 dims
        assert attention.output.dense.in_features == 9 * 32
        assert attention.output.dense.out_features == 384  # the hidden width
        assert block.intermediate.dense.out_features == 1536  # feed-forward untouched
    # The rows kept are whole heads, the same ones in the query, key and value and in the
    # output projection's columns, each unchanged.
    kept = {
        name: original_rows(weight, getattr(first.self, name).weight.detach())
        for name, weight in before.items()
    }
    columns = original_rows(output.T, first.output.dense.weight.detach().T)
    assert kept["query"] == kept["key"] == kept["value"] == columns
    heads = sorted({row // 32 for row in columns})
    assert columns == [head * 32 + dim for head in heads for dim in range(32)]
    # The three heads removed are those of least L1 norm over the four projections.
    head_of = torch.arange(384) // 32
    norms = torch.zeros(12).index_add_(0, head_of, output.abs().sum(0))
    for weight in before.values():
        norms.index_add_(0, head_of, weight.abs().sum(1))
    removed = sorted(set(range(12)) - set(heads))
    assert removed == sorted(norms.argsort()[:3].tolist())
    # Removing a head is silencing it: the original network with each block's removed heads'
    # output-projection columns zeroed computes the same embedding.
    for block, pruned_block in zip(
        original.backbone.model.encoder.layer, pruned.net.backbone.model.encoder.layer, strict=True
    ):
        dense = pruned_block.attention.output.dense.weight.detach()
        full = block.attention.output.dense.weight.detach()
        kept_columns = original_rows(full.T, dense.T)
        silenced = torch.ones(384, dtype=torch.bool)
        silenced[kept_columns] = False
        with torch.no_grad():
            full[:, silenced] = 0
    assert torch.equal(
        pruned.net.backbone.model.encoder.layer[0].intermediate.dense.weight, expansion
    )
    with torch.no_grad():
        expected = original.backbone(*inputs)
        got = pruned.net.eval().backbone(*inputs)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, net_embedding(config, encoder, inputs), atol=1e-3)


def original_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Where each row of the pruned weight `after` was in `before`."""
    return [int(torch.nonzero((before == row).all(1))[0, 0]) for row in after]


def net_embedding(config: Any, encoder: Any, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The unpruned pretrained network's embedding of `inputs`."""
    with torch.no_grad():
        return build_classifier(config, 8).eval().backbone(*inputs)


def test_a_backbone_with_nothing_it_knows_how_to_prune_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    # Neither convolutions nor layers the backbone names to narrow (a plain MLP over pixels).
    config = load_recipe("digits", SMALL_INPUTS).config
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 64))
    with pytest.raises(ConfigError) as refused:
        prune_classifier(Classifier(mlp, 64, 10, 0.1), encoder, 0.5)
    assert str(refused.value) == (
        "model.prune_channels: the backbone has neither convolutions nor feed-forward layers "
        "that mlfactory knows how to prune (`mlfactory quantize` makes an int8 bundle of any "
        "backbone)"
    )


@pytest.mark.parametrize(
    ("recipe", "overrides", "share", "message"),
    [
        (
            "digits",
            SMALL_INPUTS,
            0.5,
            "model.prune_heads: the backbone has no attention heads that mlfactory knows how to "
            "prune (the text recipes' Hugging Face transformers have; `model.prune_channels` "
            "narrows convolutions)",
        ),
        (
            "news",
            ["preprocess.max_length=32"],
            0.95,
            "model.prune_heads: 0.95 of 12 heads rounds up to all of them: keep at least one "
            "(at most 0.92)",
        ),
    ],
    ids=["no-attention", "no-head-left"],
)
def test_attention_heads_are_refused_in_one_line_where_there_are_none_or_none_would_stay(
    recipe: str, overrides: list[str], share: float, message: str, tmp_path: Path
) -> None:
    config = load_recipe(recipe, overrides).config
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    with pytest.raises(ConfigError) as refused:
        prune_attention_heads(build_classifier(config, 8), encoder, share)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.prune_channels=0.5", "model.freeze_backbone=true"], "has to be fine-tuned"),
        (["model.prune_heads=0.5", "model.freeze_backbone=true"], "prune_heads: a pruned"),
        (["model.prune_heads=1"], "model.prune_heads"),
        (["model.prune_channels=1"], "model.prune_channels"),
        (["model.prune_channels=-0.1"], "model.prune_channels"),
    ],
)
def test_settings_that_cannot_prune_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe("digits", overrides)


def test_the_cnn_transformer_keeps_the_convolution_it_flattens_whole(tmp_path: Path) -> None:
    config = load_recipe("birdcalls", []).config
    net = build_classifier(config, 5)
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    pruned = prune_classifier(net, encoder, 0.5).net
    convolutions = [m for m in pruned.backbone.cnn if isinstance(m, torch.nn.Conv2d)]
    # The recipe's 8, 16 and 32 channels: 8 stay 8 (counts stay multiples of 8), 16 are halved,
    # and the last block's 32 stay whole, flattened with the mel bands into the projection.
    assert config.model.extra["channels"] == [8, 16, 32]
    assert [conv.out_channels for conv in convolutions] == [8, 8, 32]
    clip = next((Path(__file__).parents[1] / "fixtures" / "sonic-pi" / "samples").glob("bd_*.flac"))
    (log_mel,) = (torch.from_numpy(array[None]) for array in encoder(clip.read_bytes()).values())
    with torch.no_grad():
        assert pruned.eval()(log_mel).shape == (1, 5)


def test_a_backbone_the_trace_cannot_follow_is_refused_in_one_line(tmp_path: Path) -> None:
    # The CNN-transformer without its `prune_ignored()`: Torch-Pruning then halves the last
    # convolution too, whose channels are flattened with the mel bands, and the projection
    # after the flattening no longer fits. The run stops before training, naming the setting.
    config = load_recipe("birdcalls", []).config
    net = build_classifier(config, 5)
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    net.backbone.prune_ignored = list  # names no layer to keep whole
    with pytest.raises(ConfigError) as refused:
        prune_classifier(net, encoder, 0.5)
    message = str(refused.value)
    assert message.startswith("model.prune_channels: Torch-Pruning could not prune this backbone")
    assert "RuntimeError" in message and "\n" not in message
