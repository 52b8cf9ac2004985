"""A real (short) training run on real digits: bundle, metrics, MLflow records, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.cli import app
from mlfactory.config.loader import Recipe, load_recipe
from mlfactory.errors import ConfigError
from mlfactory.tracking import TrackedRun
from mlfactory.training.train import TrainResult, train
from tests.numerics import assert_parity_recorded

from ..conftest import SMALL_NETWORK, fast_digits_overrides
from ..test_cli import assert_one_line_error

runner = CliRunner()


@pytest.mark.numerics
def test_bundle_is_complete_and_self_describing(trained_digits: TrainResult) -> None:
    bundle = load_bundle(trained_digits.bundle.path)
    meta = bundle.meta
    assert sorted(p.name for p in bundle.path.iterdir()) == [
        "bundle.json",
        "model.onnx",
        "profile.json",  # the monitoring reference profile (npz + JSON, no pickle)
        "profile.npz",
    ]
    assert meta.name == "digits"
    assert meta.version == "1"  # the first run named digits in its MLflow store
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
    assert test["unsupported_labels"] == []  # every digit has test items
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
    # the kernels it trained with, as the bundle records them (one process: the same string)
    assert run.data.tags["float_kernels"] == trained_digits.bundle.meta.export["float_kernels"]
    for key in ("train/loss_epoch", "val/loss", "val/acc", "test/acc", "test/f1_macro"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"bundle", "confusion_matrix.png"} <= artifacts
    bundle_files = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/model.onnx", "bundle/bundle.json"} <= bundle_files


def test_resume_takes_the_stored_overrides_and_refuses_unsafe_changes(
    digit_folder: Path, tmp_path: Path
) -> None:
    # The small network, frozen, keeps the two trainings short.
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, epochs=1),
        *SMALL_NETWORK,
        "model.freeze_backbone=true",
    ]
    out = tmp_path / "run"
    first = runner.invoke(app, ["train", "digits", *overrides, "--out", str(out)])
    assert first.exit_code == 0, first.output
    run_id = json.loads((out / "run.json").read_text())["mlflow_run_id"]
    last = out / "checkpoints" / "last.ckpt"
    steps_first = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert steps_first > 0
    resume = ["train", "digits", "--out", str(out), "--resume"]

    # The run is finished: training it longer replaces its bundle, so that needs --force.
    assert_one_line_error(runner.invoke(app, [*resume, "trainer.max_epochs=2"]), "--force")
    # Data, split or model changes would make the MLflow run and the bundle disagree.
    changed = runner.invoke(app, [*resume, "--force", "data.test_fraction=0.25", "trainer.lr=0.01"])
    assert_one_line_error(changed, "--resume cannot change data.test_fraction, trainer.lr:")
    assert "trainer.max_epochs" in changed.output  # names what resume may change

    # Only the new epoch count is given: the first run's overrides (its data) come from run.json.
    resumed = runner.invoke(app, [*resume, "--force", "trainer.max_epochs=2"])
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2 * steps_first
    meta = load_bundle(out / "bundle").meta
    assert meta.mlflow_run_id == run_id and meta.version == "1"  # the same run, continued
    assert meta.config["trainer"]["max_epochs"] == 2
    assert meta.config["data"]["source"] == str(digit_folder)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert len(client.get_metric_history(run_id, "val/loss")) == 2  # one epoch, then one more
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_with"] == "trainer.max_epochs=2"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    fewer = runner.invoke(app, [*resume, "--force", "trainer.max_epochs=1"])
    assert_one_line_error(fewer, "has trained 2 epochs; trainer.max_epochs=1 is fewer")
    assert client.get_run(run_id).info.status == "FINISHED"  # a refused resume leaves it be

    # A checkpoint whose optimizer holds other parameters than the network trains (as one of a
    # version of mlfactory that trained a layer it now freezes): one line, not torch's traceback.
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint["optimizer_states"][0]["param_groups"][0]["params"].pop()
    torch.save(checkpoint, last)
    other = runner.invoke(app, [*resume, "--force", "trainer.max_epochs=3"])
    assert other.exit_code == 2 and "Traceback" not in other.output, other.output
    assert other.output.strip().splitlines()[-1] == (
        f"error: --resume: the checkpoint {last} does not fit the network: loaded state dict "
        "contains a parameter group that doesn't match the size of optimizer's group (written by "
        "another mlfactory version, or edited); start a new run with another --out"
    )


def test_a_new_run_never_replaces_a_bundle_silently(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained_digits.bundle.path, out / "bundle")
    result = runner.invoke(app, ["train", "digits", "--out", str(out)])
    assert_one_line_error(result, "already holds the bundle 'digits' version 1")
    assert "--force" in result.output
    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_digits.out_dir / "checkpoints" / "last.ckpt", interrupted / "checkpoints")
    result = runner.invoke(app, ["train", "digits", "--out", str(interrupted)])
    # Without its run.json the run cannot be resumed, and the error says so.
    assert_one_line_error(result, "whose run.json is missing or damaged, so it cannot be resumed")
    shutil.copy(trained_digits.out_dir / "run.json", interrupted)
    result = runner.invoke(app, ["train", "digits", "--out", str(interrupted)])
    assert_one_line_error(result, "holds an interrupted run: add --resume")


def test_every_training_run_numbers_its_own_version(tmp_path: Path) -> None:
    """The bundle version is the run's number among the MLflow runs of its name."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.create_experiment("numbering")
    runs = [client.create_run(experiment, run_name=name) for name in ("pets", "news", "pets")]
    client.delete_run(runs[0].info.run_id)  # a deleted run keeps its number
    later = client.create_run(experiment, run_name="pets")
    numbers = [TrackedRun(client, run.info.run_id).run_number() for run in [*runs, later]]
    assert numbers == [1, 1, 2, 3]
    quoted = client.create_run(experiment, run_name="it's")
    assert TrackedRun(client, quoted.info.run_id).run_number() == 1


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


def test_a_copied_or_moved_run_resumes_from_its_own_checkpoints(
    digit_folder: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, epochs=1),
        *SMALL_NETWORK,
        "model.freeze_backbone=true",
    ]
    first = runner.invoke(app, ["train", "digits", *overrides, "--out", str(tmp_path / "old")])
    assert first.exit_code == 0, first.output
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    # The checkpoints remember the old folder: its best.ckpt must not be the one loaded.
    (tmp_path / "old" / "checkpoints" / "best.ckpt").write_bytes(b"not the copy's weights")
    resume = ["train", "digits", "--out", str(tmp_path / "new"), "--resume", "--force"]
    resumed = runner.invoke(app, [*resume, "trainer.max_epochs=2"])
    assert resumed.exit_code == 0, resumed.output
    assert load_bundle(tmp_path / "new" / "bundle").meta.metrics["test"]["split_size"] > 0
    assert not (tmp_path / "new" / ".bundle.partial").exists()  # published whole, renamed
    # The best score of the first epoch was read back (not reset by the new folder's path).
    assert not [w for w in recwarn if "dirpath has changed" in str(w.message)]
