"""Audio on the shared training pipeline: a real (1-epoch) run of the `birdcalls` recipe on real
clips, its bundle, and train/serve parity through the HTTP API; the `emotions` backbone export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlfactory.bundle import load_bundle
from mlfactory.config.loader import load_recipe
from mlfactory.data.dataset import Item, content_key
from mlfactory.errors import ConfigError
from mlfactory.serving.app import create_app
from mlfactory.training.backbones import build_classifier
from mlfactory.training.train import TrainResult, train
from tests.numerics import assert_parity_recorded, assert_same_prediction
from tests.training_path import training_probabilities, untrained_bundle

FIXTURES = Path(__file__).parents[1] / "fixtures"
# Real clips from tests/fixtures, one folder per class (the seed's "folder per species" layout).
CLASSES = {
    "drum": ["sonic-pi/samples/bd_*.flac", "sonic-pi/samples/tabla_*.flac"],
    "elec": ["sonic-pi/samples/elec_*.flac"],
    "animal": ["tuxpaint/stamps/animals/*/*.ogg"],  # calls; the *_desc_<lang> speech is left out
}


def write_clip_folder(root: Path) -> Path:
    for label, patterns in CLASSES.items():
        (root / label).mkdir(parents=True)
        for pattern in patterns:
            for clip in sorted(FIXTURES.glob(pattern)):
                if "_desc_" not in clip.name:
                    shutil.copy(clip, root / label / clip.name)
    return root


def fast_overrides(source: Path, workdir: Path) -> list[str]:
    return [
        f"data.source={source}",
        "data.min_per_class=null",
        f"data.cache_dir={workdir / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{workdir / 'mlruns.db'}",
        f"tracking.artifact_location={workdir / 'artifacts'}",
        "trainer.max_epochs=1",
    ]


@pytest.fixture(scope="module")
def trained_birdcalls(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    workdir = tmp_path_factory.mktemp("birdcalls")
    source = write_clip_folder(workdir / "clips")
    recipe = load_recipe("birdcalls", fast_overrides(source, workdir))
    return train(recipe, workdir / "run", progress=False)


@pytest.mark.numerics
def test_birdcalls_run_writes_a_faithful_audio_bundle(trained_birdcalls: TrainResult) -> None:
    bundle = load_bundle(trained_birdcalls.bundle.path)
    meta = bundle.meta
    assert meta.modality == "audio" and meta.name == "birdcalls"
    assert meta.labels == ["animal", "drum", "elec"]
    assert meta.inputs == {"log_mel": [64, 201]}
    assert meta.preprocessing["sample_rate"] == 16000
    assert meta.config["model"]["backbone"] == "cnn_transformer"
    test_items = trained_birdcalls.dataset.split("test")
    assert len(test_items) >= 2
    assert_parity_recorded(meta.export, len(test_items))
    assert meta.metrics["test"]["split_size"] == len(test_items)


@pytest.mark.numerics
def test_served_probabilities_equal_the_training_path(trained_birdcalls: TrainResult) -> None:
    result = trained_birdcalls
    # One clip per class: ogg calls and flac samples, from any split.
    items = list({item.label: item for item in result.dataset.items}.values())
    expected = training_probabilities(result, items)

    with TestClient(create_app(result.bundle.path), raise_server_exceptions=True) as client:
        files = [("files", (Path(str(it.path)).name, it.read_bytes())) for it in items]
        response = client.post("/v1/predict", files=files)
    assert response.status_code == 200, response.text
    labels = result.dataset.labels
    for row, prediction in zip(expected, response.json()["predictions"], strict=True):
        served = np.array([prediction["probabilities"][label] for label in labels])
        assert_same_prediction(served, row)


@pytest.mark.numerics
def test_emotions_backbone_exports_with_parity(tmp_path: Path) -> None:
    """The ImageNet CNN on a 3-channel spectrogram (local efficientnet_lite0 weights)."""
    recipe = load_recipe("emotions", ["model.pretrained=auto"])
    clips = sorted((FIXTURES / "tuxpaint/stamps/animals/mammals").glob("*_desc_*.ogg"))
    items = [
        Item(key=content_key(c.read_bytes()), label=c.stem[-2:], split="test", path=str(c))
        for c in clips
    ]
    labels = sorted({item.label for item in items})
    bundle = untrained_bundle(recipe, labels, items, tmp_path, "emotions-export-test")
    assert bundle.meta.inputs == {"log_mel": [64, 201]}
    assert len(items) == 4
    assert_parity_recorded(bundle.meta.export, len(items))


def test_unknown_model_extra_key_is_a_config_error() -> None:
    recipe = load_recipe("birdcalls", ["+model.extra.width=3"])
    with pytest.raises(ConfigError, match=r"model\.extra\.width"):
        build_classifier(recipe.config, 3)
