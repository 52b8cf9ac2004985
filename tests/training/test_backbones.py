"""Backbone construction: the width each backbone reports is the width it outputs, the early
stage whose channel statistics the OOD score reads, and no trained parameter outside the output
(which DDP refuses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlfactory.config.loader import load_recipe, preprocessing_params
from mlfactory.config.schema import ModelConfig
from mlfactory.errors import ConfigError
from mlfactory.training.backbones import build_classifier, check_backbone, training_encoder
from mlfactory.training.backbones.audio import CnnTransformer
from mlfactory.training.backbones.image import build_image_backbone, embedding_width
from mlfactory.training.network import (
    Classifier,
    InferenceGraph,
    channel_statistics,
    early_stage,
    example_inputs,
    parameters_outside_the_output,
)


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


@pytest.mark.parametrize(
    ("backbone", "stage", "channels"),
    [("efficientnet_lite0", "blocks.1", 24), ("resnet18", "layer1", 64)],
)
def test_a_timm_backbones_early_stage_is_its_first_at_a_quarter_resolution(
    backbone: str, stage: str, channels: int
) -> None:
    model, _ = build_image_backbone(ModelConfig(backbone=backbone, pretrained="none"))
    assert early_stage(model) is model.get_submodule(stage)
    net = Classifier(model, embedding_width(model), 3, 0.0)
    with torch.no_grad():
        probabilities, embedding, early = InferenceGraph(net).eval()(torch.rand(2, 3, 64, 64))
    assert probabilities.shape == (2, 3) and early.shape == (2, 2 * channels)
    assert embedding.shape == (2, embedding_width(model))


def test_early_features_are_each_channels_mean_and_spread() -> None:
    maps = torch.rand(2, 3, 4, 5) * torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1)
    stats = channel_statistics(maps).numpy()
    flat = maps.flatten(2).numpy()
    np.testing.assert_allclose(stats[:, :3], flat.mean(axis=2), rtol=1e-5)
    np.testing.assert_allclose(stats[:, 3:], flat.std(axis=2), rtol=1e-4)
    tokens = maps.flatten(2).transpose(1, 2)  # (B, N, C), as a vision transformer's
    np.testing.assert_allclose(channel_statistics(tokens).numpy(), stats, rtol=1e-5)


def test_the_cnn_transformer_has_an_early_stage_and_text_encoders_none() -> None:
    cnn = CnnTransformer(64, 201, -100.0, 20.0, [16, 32, 64], 64, 2, 1, 128, 0.1)
    assert early_stage(cnn) is cnn.cnn[7]  # the second block's pooling: a quarter resolution
    one_block = CnnTransformer(64, 201, -100.0, 20.0, [16], 64, 2, 1, 128, 0.1)
    assert early_stage(one_block) is one_block.cnn[3]
    assert (
        early_stage(
            torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, batch_first=True), 1)
        )
        is None
    )


def test_a_recipe_can_leave_the_early_features_out() -> None:
    model, _ = build_image_backbone(ModelConfig(backbone="efficientnet_lite0", pretrained="none"))
    net = Classifier(model, embedding_width(model), 3, 0.0)
    graph = InferenceGraph(net, early_features=False).eval()
    assert not graph.has_early_features
    with torch.no_grad():
        assert len(graph(torch.rand(2, 3, 32, 32))) == 2


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("digits", []),
        ("news", ["preprocess.max_length=16"]),
        ("news", ["preprocess.max_length=16", "model.freeze_backbone=true"]),
        ("birdcalls", []),
        ("emotions", []),
    ],
)
def test_every_parameter_that_trains_reaches_the_output(
    recipe: str, overrides: list[str], tmp_path: Path
) -> None:
    """Each kind of packaged network, as built for training: a parameter that trains without
    reaching the output stops DDP at its second step (BERT's pooler, unused by mean pooling,
    is frozen for that reason)."""
    config = load_recipe(recipe, overrides).config
    encoder, _ = training_encoder(config, preprocessing_params(config), tmp_path)
    network = build_classifier(config, 4)
    assert parameters_outside_the_output(network, example_inputs(encoder, 2)) == []
    network.add_module("side_layer", torch.nn.Linear(2, 2))
    unused = parameters_outside_the_output(network, example_inputs(encoder, 2))
    assert unused == ["side_layer.weight", "side_layer.bias"]


@pytest.mark.parametrize(
    ("n_mels", "fix"),
    [
        ("4", "use between 1 and 2 blocks"),
        ("1", "every block needs at least 2 of each: raise preprocess.n_mels"),
    ],
)
def test_too_few_mel_bands_for_the_conv_blocks_say_what_to_change(n_mels: str, fix: str) -> None:
    from mlfactory.errors import ConfigError

    config = load_recipe("birdcalls", [f"preprocess.n_mels={n_mels}"]).config
    with pytest.raises(ConfigError, match=rf"3 conv blocks halve the {n_mels} mel bands .*; {fix}"):
        build_classifier(config, 4)


def test_a_weights_file_that_cannot_be_read_safely_is_one_line(tmp_path: Path) -> None:
    """Garbage, a truncated torch file, a pickled object weights_only refuses, a bare tensor
    and garbage safetensors: each names model.weights_path (they were tracebacks)."""
    import pickle

    from mlfactory.errors import ConfigError
    from mlfactory.training.backbones.image import read_state_dict

    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "state.pt")
    whole = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not weights")
    (tmp_path / "object.pt").write_bytes(pickle.dumps(ModelConfig()))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "garbage.safetensors").write_bytes(b"garbage garbage")
    assert set(read_state_dict(tmp_path / "state.pt")) == {"conv.weight"}
    for name, reason in (
        ("truncated.pt", "(PytorchStreamReader failed reading zip archive"),
        ("garbage.pt", "(Weights only load failed)"),
        ("object.pt", "(Weights only load failed)"),
        ("tensor.pt", "holds a Tensor, not a state dict"),
        ("garbage.safetensors", "(Error while deserializing header"),
    ):
        with pytest.raises(ConfigError) as raised:
            read_state_dict(tmp_path / name)
        message = str(raised.value)
        assert message.startswith(f"model.weights_path: {tmp_path / name} ") and reason in message
        assert len(message) < 300


@pytest.mark.parametrize(
    ("config_json", "reason"),
    [("{}", "Couldn't instantiate the backend tokenizer"), ("not json", "is not a valid JSON")],
)
def test_a_model_folder_without_a_usable_tokenizer_names_the_weights_path(
    config_json: str, reason: str, tmp_path: Path
) -> None:
    from mlfactory.errors import ConfigError
    from mlfactory.training.backbones.text import write_tokenizer

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config_json)
    config = ModelConfig(backbone="all-MiniLM-L6-v2", weights_path=str(folder))
    with pytest.raises(ConfigError) as raised:
        write_tokenizer(config, tmp_path / "out")
    message = str(raised.value)
    assert message.startswith(f"model.weights_path: no tokenizer for '{folder}': ")
    assert reason in message
    assert not message.endswith(":")


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("efficientnet_lite9", "; did you mean efficientnet_lite4, "),
        ("no-such-network-at-all", " (python -c 'import timm; print(timm.list_models())'"),
    ],
)
def test_an_unknown_backbone_names_the_closest_timm_models(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_image_backbone(ModelConfig(backbone=name, pretrained="none"))
    message = str(caught.value)
    assert message.startswith(f"model.backbone: '{name}' is not a timm model")
    assert hint in message


@pytest.mark.parametrize(
    ("recipe", "overrides", "message"),
    [
        ("digits", ["model.backbone=efficientnet_lite9"], "did you mean efficientnet_lite4"),
        ("emotions", ["model.backbone=efficientnet_lite9"], "did you mean efficientnet_lite4"),
        ("emotions", ["model.extra.d_model=8"], "model.extra.d_model: unknown key for backbone"),
        ("birdcalls", ["+model.extra.depth=2"], "model.extra.depth: unknown key for backbone"),
        ("digits", ["model.backbone=hf-hub:timm/resnet18.a1_in1k"], None),
        ("digits", ["model.backbone=resnet18.a1_in1k"], None),
        ("news", ["model.backbone=no-such/text-model"], None),
        ("news", ["model.backbone=no-such/text-model", "model.pretrained=local"], "no local model"),
        ("news", ["model.weights_path=/nonexistent"], "is not a Hugging Face model folder"),
    ],
)
def test_a_backbone_is_checked_without_building_it(
    recipe: str, overrides: list[str], message: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a sweep checks each choice with: names timm does not know, `model.extra` keys the
    family does not take, text models that are neither local nor allowed from the hub; whether a
    hub name exists only loading tells."""
    import timm

    def not_built(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone was built")

    monkeypatch.setattr(timm, "create_model", not_built)
    config = load_recipe(recipe, overrides).config
    if message is None:
        check_backbone(config)
        return
    with pytest.raises(ConfigError, match=message):
        check_backbone(config)
