"""A real (short) training run on real digits: bundle, metrics, MLflow records, resume."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from mlfactory.bundle import load_bundle
from mlfactory.config.loader import Recipe, load_recipe
from mlfactory.errors import ConfigError
from mlfactory.training.train import TrainResult, train
from tests.numerics import assert_parity_recorded

from ..conftest import fast_digits_overrides


@pytest.mark.numerics
def test_bundle_is_complete_and_self_describing(trained_digits: TrainResult) -> None:
    bundle = load_bundle(trained_digits.bundle.path)
    meta = bundle.meta
    assert sorted(p.name for p in bundle.path.iterdir()) == ["bundle.json", "model.onnx"]
    assert meta.name == "digits"
    assert meta.modality == "image"
    assert meta.labels == [str(d) for d in range(10)]
    assert meta.preprocessing["crop_size"] == 32
    assert meta.config["trainer"]["max_epochs"] == 3
    assert meta.data_fingerprint == trained_digits.dataset.fingerprint
    assert meta.mlflow_run_id == trained_digits.mlflow_run_id
    assert meta.inputs == {"pixel_values": [3, 32, 32]}
    assert_parity_recorded(meta.export, len(trained_digits.dataset.split("test")))
    assert meta.git_commit is None or len(meta.git_commit) >= 40


def test_test_metrics_are_recorded_and_beat_chance(trained_digits: TrainResult) -> None:
    test = load_bundle(trained_digits.bundle.path).meta.metrics["test"]
    assert test["split_size"] == len(trained_digits.dataset.split("test"))
    # 3 short epochs on ~140 real training digits: clearly above the 10% of chance.
    assert test["accuracy"] > 0.25
    assert 0.0 <= test["f1_macro"] <= 1.0
    matrix = test["confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == test["split_size"]
    assert set(test["per_class"]) == {str(d) for d in range(10)}
    assert (trained_digits.out_dir / "confusion_matrix.png").stat().st_size > 1000


def test_mlflow_run_has_params_metrics_and_artifacts(
    trained_digits: TrainResult, digits_recipe: Recipe
) -> None:
    client = mlflow.MlflowClient(tracking_uri=digits_recipe.config.tracking.tracking_uri)
    run = client.get_run(trained_digits.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.max_epochs"] == "3"
    assert run.data.params["data.source"] == digits_recipe.config.data.source
    assert run.data.tags["data_fingerprint"] == trained_digits.dataset.fingerprint
    for key in ("train/loss_epoch", "val/loss", "val/acc", "test/acc", "test/f1_macro"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"bundle", "confusion_matrix.png"} <= artifacts
    bundle_files = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/model.onnx", "bundle/bundle.json"} <= bundle_files


def test_resume_continues_the_same_run_from_its_checkpoint(
    digit_folder: Path, tmp_path: Path
) -> None:
    overrides = fast_digits_overrides(digit_folder, tmp_path, epochs=1)
    first = train(load_recipe("digits", overrides), tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    steps_first = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert steps_first > 0

    longer = load_recipe("digits", [*overrides, "trainer.max_epochs=2"])
    resumed = train(longer, tmp_path / "run", resume=True, progress=False)
    assert resumed.mlflow_run_id == first.mlflow_run_id
    # one more epoch of the same size: training continued, it did not start over
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2 * steps_first
    client = mlflow.MlflowClient(tracking_uri=longer.config.tracking.tracking_uri)
    history = client.get_metric_history(first.mlflow_run_id, "val/loss")
    assert len(history) == 2  # one epoch before the interruption, one after
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["mlflow_run_id"] == first.mlflow_run_id


def test_resume_without_a_previous_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no interrupted run"):
        train(load_recipe("digits"), tmp_path / "nothing", resume=True, progress=False)


def test_balanced_class_weights_reach_the_loss(digit_folder: Path, tmp_path: Path) -> None:
    from mlfactory.config.constraints import check_dataclass
    from mlfactory.training.train import class_weights, prepare_fit

    overrides = fast_digits_overrides(digit_folder, tmp_path)
    plain = prepare_fit(load_recipe("digits", overrides).config, tmp_path / "plain")
    assert plain.module.loss.weight is None
    recipe = load_recipe("digits", [*overrides, "trainer.class_weights=balanced", "seed=1"])
    check_dataclass(recipe.config)
    setup = prepare_fit(recipe.config, tmp_path / "balanced")
    counts = {label: 0 for label in setup.dataset.labels}
    for item in setup.dataset.split("train"):
        counts[item.label] += 1
    total, k = sum(counts.values()), len(counts)
    expected = [total / (k * counts[label]) for label in setup.dataset.labels]
    assert setup.module.loss.weight.tolist() == pytest.approx(expected, rel=1e-6)  # float32

    # An imbalanced train split: the rare class weighs more, in proportion to its rarity.
    rare = setup.dataset.labels[0]
    kept = [i for i in setup.dataset.items if i.label != rare or i.split != "train"]
    kept += [i for i in setup.dataset.split("train") if i.label == rare][:3]
    from dataclasses import replace

    weights = class_weights(replace(setup.dataset, items=kept), "balanced")
    assert weights is not None
    others = [w for label, w in zip(setup.dataset.labels, weights, strict=True) if label != rare]
    assert weights[0] == pytest.approx(others[0] * counts[setup.dataset.labels[1]] / 3)
    assert class_weights(setup.dataset, None) is None
