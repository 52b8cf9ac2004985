"""`mlfactory profile`: a bundle's monitoring profile written again from its recipe's data."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from mlfactory.bundle import OOD_SCORER_KEY, load_bundle
from mlfactory.cli import app
from mlfactory.monitoring.profile import ARRAYS_FILE, META_FILE, VALIDATION_AND_TEST, load_profile
from mlfactory.monitoring.report import check_window
from mlfactory.monitoring.split_agreement import TEST_SPLIT, disagreement
from mlfactory.predictor import Predictor
from mlfactory.training.ood_graph import OOD_SCORE, SCORE_RTOL, remove_scorer
from mlfactory.training.train import TrainResult
from tests.conftest import python_json, write_digit_folder
from tests.monitoring.conftest import run_bundle
from tests.test_cli import assert_one_line_error

runner = CliRunner()


def _exported_before_monitoring(bundle: Path) -> None:
    """Make `bundle` what export wrote before monitoring: no profile, no OOD score in its graph."""
    for name in (ARRAYS_FILE, META_FILE):
        (bundle / name).unlink()
    model = onnx.load(str(bundle / "model.onnx"))
    remove_scorer(model)
    kept = [prop for prop in model.metadata_props if prop.key != OOD_SCORER_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(bundle / "model.onnx"))
    _edit_meta(bundle, outputs=[o for o in _meta(bundle)["outputs"] if o != OOD_SCORE])


def _meta(bundle: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((bundle / "bundle.json").read_text())  # type: ignore[no-any-return]


def _edit_meta(bundle: Path, **fields: object) -> None:
    meta = _meta(bundle)
    meta.update(fields)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def _tracked_in(bundle: Path, store: Path) -> str:
    """Point `bundle` at a new run of a new MLflow store in `store`; returns the run id."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("profiles", artifact_location=str(store / "artifacts"))
    run_id = str(client.create_run(experiment).info.run_id)
    config = _meta(bundle)["config"]
    config["tracking"]["tracking_uri"] = uri
    _edit_meta(bundle, config=config, mlflow_run_id=run_id)
    return run_id


def _ood_scores(bundle: Path, items: list[bytes]) -> np.ndarray:
    """The OOD scores the server gets from the model's graph, with the profile it loads."""
    predictor = Predictor(load_bundle(bundle))
    predictor.profile = load_profile(bundle)
    output = predictor.run([predictor.encode(raw) for raw in items])
    assert output.ood_scores is not None, "the graph gives no OOD score for the profile"
    return output.ood_scores


def test_a_bundle_exported_before_monitoring_gets_the_profile_export_writes(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    original = trained_digits.bundle.path
    copy = tmp_path / "bundle"
    shutil.copytree(original, copy)
    _exported_before_monitoring(copy)
    run_id = _tracked_in(copy, tmp_path / "store")
    script = textwrap.dedent(
        """
        import json, sys
        from mlfactory.profile_command import profile_target

        result = profile_target(sys.argv[1])
        leaked = sorted(
            name for name in sys.modules
            if name.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "timm")
        )
        print(json.dumps({"run": result.mlflow_run_id, "leaked": leaked}))
        """
    )
    result = python_json(script, str(copy))
    assert result == {"run": run_id, "leaked": []}

    # The same bundle and the same validation split: the profile export wrote, to the last bit.
    with np.load(original / ARRAYS_FILE) as before, np.load(copy / ARRAYS_FILE) as after:
        assert before.files == after.files
        for key in before.files:
            np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    before_meta = json.loads((original / META_FILE).read_text())
    after_meta = json.loads((copy / META_FILE).read_text())
    before_meta.pop("created_at"), after_meta.pop("created_at")
    assert after_meta == before_meta

    # The OOD score is back in the model's graph, and scores as the exported bundle's did.
    assert _meta(copy)["outputs"][-1] == OOD_SCORE
    inputs = [item.read_bytes() for item in trained_digits.dataset.split("test")[:16]]
    np.testing.assert_array_equal(_ood_scores(copy, inputs), _ood_scores(original, inputs))

    # The bundle is logged to its MLflow run again, profile included.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=_meta(copy)["config"]["tracking"]["tracking_uri"])
    logged = {Path(entry.path).name for entry in client.list_artifacts(run_id, "bundle")}
    assert {ARRAYS_FILE, META_FILE, "model.onnx", "bundle.json"} <= logged


def test_a_run_missing_from_the_store_is_a_warning_and_no_new_store(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    config = _meta(copy)["config"]
    missing = tmp_path / "elsewhere" / "mlruns.db"
    config["tracking"]["tracking_uri"] = f"sqlite:///{missing}"
    _edit_meta(copy, config=config)
    result = runner.invoke(app, ["profile", str(copy)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"digits {_meta(copy)['version']}: new monitoring profile in {copy}" in said
    assert "is not in" in result.output and "logged to MLflow" not in result.output
    assert not missing.exists() and not missing.parent.exists()
    assert (copy / ARRAYS_FILE).is_file()


def test_data_whose_labels_changed_is_one_line(trained_digits: TrainResult, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    _edit_meta(copy, labels=list(reversed(_meta(copy)["labels"])))
    result = runner.invoke(app, ["profile", str(copy)])
    assert_one_line_error(result, "the recipe's data now has labels")


def _inverted_digits(root: Path, per_class: int, offset: int) -> Path:
    """Real digits, white on black turned black on white: a lasting change of the inputs."""
    write_digit_folder(root, per_class, offset)
    for path in root.rglob("*.png"):
        ImageOps.invert(Image.open(path)).save(path)
    return root


def test_data_that_is_normal_now_becomes_the_reference(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """After a lasting change (the inputs come inverted from now on), the profile is written
    from a labelled sample of the new inputs: the drift checks then compare with those."""
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    exported = load_profile(copy)
    new_normal = _inverted_digits(tmp_path / "inverted", 30, offset=200)
    result = runner.invoke(app, ["profile", str(copy), "--data", str(new_normal)])
    assert result.exit_code == 0, result.output
    profile = load_profile(copy)
    assert exported is not None and profile is not None
    assert profile.meta["n_reference"] == 300
    assert profile.meta["source"] == f"{new_normal} (all of its items)"

    later = _inverted_digits(tmp_path / "later", 10, offset=300)
    paths = sorted(later.rglob("*.png"))
    predictor = Predictor(load_bundle(copy))
    outputs = run_bundle(predictor, [p.read_bytes() for p in paths], [p.parent.name for p in paths])
    for reference, drifts in ((exported, True), (profile, False)):
        report = check_window(reference, outputs.window(reference), {"name": "digits"})
        drifted = {check.name for check in report.checks if check.drift}
        # what the inputs look like, and how the model sees them
        assert ({"brightness_mean", "embedding"} <= drifted) is drifts
        assert bool({"brightness_mean", "embedding"} & drifted) is drifts


def test_with_test_the_reference_is_the_validation_and_test_splits(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """Twice the held-out inputs: the profile is built from both splits, the OOD score in the
    graph is the new profile's, and the test split's figures are kept but not tested against a
    reference that holds them."""
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    exported = load_profile(copy)
    result = runner.invoke(app, ["profile", str(copy), "--with-test"])
    assert result.exit_code == 0, result.output
    profile = load_profile(copy)
    assert exported is not None and profile is not None
    validation = trained_digits.dataset.split("val")
    test = trained_digits.dataset.split("test")
    assert exported.meta["n_reference"] == len(validation)
    assert profile.meta["n_reference"] == len(validation) + len(test)
    assert profile.meta["source"] == VALIDATION_AND_TEST
    assert profile.meta[TEST_SPLIT]["n"] == len(test)
    assert disagreement(profile) is None
    assert profile.ood.threshold != exported.ood.threshold
    inputs = [item.read_bytes() for item in test[:16]]
    outputs = run_bundle(Predictor(load_bundle(copy)), inputs, [item.label for item in test[:16]])
    expected = profile.ood.score(outputs.embeddings, outputs.early)
    difference = np.abs(_ood_scores(copy, inputs) - expected) / (np.abs(expected) + 1.0)
    assert difference.max() <= SCORE_RTOL


def test_with_test_and_data_together_is_one_line_and_nothing_changes(
    trained_digits: TrainResult, digit_folder: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    before = {name: (copy / name).read_bytes() for name in (ARRAYS_FILE, META_FILE, "model.onnx")}
    sample = write_digit_folder(tmp_path / "sample", 3, offset=200)
    result = runner.invoke(app, ["profile", str(copy), "--with-test", "--data", str(sample)])
    assert_one_line_error(result, "--data makes another source the reference, --with-test")
    assert {name: (copy / name).read_bytes() for name in before} == before


def test_with_test_and_no_test_split_is_one_line_and_nothing_changes(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    config = _meta(copy)["config"]
    config["data"]["test_fraction"] = 0.0
    _edit_meta(copy, config=config)
    before = {name: (copy / name).read_bytes() for name in (ARRAYS_FILE, META_FILE, "model.onnx")}
    result = runner.invoke(app, ["profile", str(copy), "--with-test"])
    assert_one_line_error(result, "the recipe's data has no test split (data.test_fraction=0)")
    assert {name: (copy / name).read_bytes() for name in before} == before


def test_items_the_bundle_trained_on_are_left_out_of_the_reference(
    trained_digits: TrainResult, digit_folder: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    sample = write_digit_folder(tmp_path / "sample", 3, offset=200)
    shutil.copytree(digit_folder / "3", sample / "3", dirs_exist_ok=True)
    threes = [item for item in trained_digits.dataset.items if item.label == "3"]
    trained_on = sum(item.split == "train" for item in threes)
    result = runner.invoke(app, ["profile", str(copy), "--data", str(sample)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"{trained_on} items of --data are in the bundle's training split, left out" in said
    profile = load_profile(copy)
    assert profile is not None
    assert profile.meta["n_reference"] == 30 + len(threes) - trained_on


def test_the_data_the_bundle_trained_on_is_refused_as_a_reference(
    trained_digits: TrainResult, digit_folder: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    result = runner.invoke(app, ["profile", str(copy), "--data", str(digit_folder)])
    assert_one_line_error(result, "is the data the bundle was trained on")


def test_too_few_reference_items_is_the_error_alone_and_the_profile_is_kept(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """Not first `monitoring: no profile (...); the bundle serves without OOD scores`: the
    bundle keeps the profile it has."""
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    before = {name: (copy / name).read_bytes() for name in (ARRAYS_FILE, META_FILE, "model.onnx")}
    few = write_digit_folder(tmp_path / "few", 1, offset=300)
    result = runner.invoke(app, ["profile", str(copy), "--data", str(few)])
    assert_one_line_error(result, "10 reference items")
    assert {name: (copy / name).read_bytes() for name in before} == before


def test_the_recipes_class_limits_do_not_apply_to_data(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """`data.max_per_class` and `data.min_per_class` chose what the bundle trained on: the
    reference is all of --data, more items a class than the cap or fewer than the minimum."""
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    sample = write_digit_folder(tmp_path / "sample", 6, offset=200)
    for limits in ({"max_per_class": 3}, {"max_per_class": 3, "min_per_class": 20}):
        config = _meta(copy)["config"]
        config["data"].update(limits)
        _edit_meta(copy, config=config)
        result = runner.invoke(app, ["profile", str(copy), "--data", str(sample)])
        assert result.exit_code == 0, result.output
        profile = load_profile(copy)
        assert profile is not None and profile.meta["n_reference"] == 60, limits


def in_a_run_elsewhere(
    source: Path, tmp_path: Path, before_monitoring: bool = False
) -> tuple[str, str]:
    """Log a copy of the bundle `source` (`tmp_path`/bundle; exported before monitoring, if
    asked) as the `bundle` artifact of a new run in a new MLflow store in `tmp_path`/store, its
    recipe's store a relative one that is not here; the store's URI and the run id."""
    from mlflow.tracking import MlflowClient

    bundle = tmp_path / "bundle"
    shutil.copytree(source, bundle)
    if before_monitoring:
        _exported_before_monitoring(bundle)
    run_id = _tracked_in(bundle, tmp_path / "store")
    config = _meta(bundle)["config"]
    uri, config["tracking"]["tracking_uri"] = (
        config["tracking"]["tracking_uri"],
        "sqlite:///runs/bench/monitoring/mlruns.db",
    )
    _edit_meta(bundle, config=config)
    MlflowClient(tracking_uri=uri).log_artifacts(run_id, str(bundle), "bundle")
    return uri, run_id


def test_a_run_ids_bundle_is_logged_back_to_the_store_it_came_from(
    trained_digits: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLFLOW_TRACKING_URI named the store the run id was fetched from: the new profile goes
    back to that run, not to the recipe's store (not here), nor only to the download."""
    from mlflow.tracking import MlflowClient

    uri, run_id = in_a_run_elsewhere(trained_digits.bundle.path, tmp_path, before_monitoring=True)
    client = MlflowClient(tracking_uri=uri)
    assert ARRAYS_FILE not in {Path(e.path).name for e in client.list_artifacts(run_id, "bundle")}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = runner.invoke(app, ["profile", run_id])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"new monitoring profile in the bundle of MLflow run {run_id}" in said
    assert "is not in" not in said and "mlfactory-model-" not in said
    logged = {Path(entry.path).name for entry in client.list_artifacts(run_id, "bundle")}
    assert {ARRAYS_FILE, META_FILE} <= logged
    assert not (tmp_path / "runs").exists()  # no empty store made where the recipe points


@pytest.mark.parametrize("command", ["profile", "evaluate"])
def test_a_run_ids_bundle_that_cannot_be_logged_back_is_an_error(
    command: str, trained_digits: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written only into the download, the profile (or the metrics) would be gone when the
    command ends: refused before any is made."""
    from mlfactory.tracking import TrackedRun

    uri, run_id = in_a_run_elsewhere(trained_digits.bundle.path, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # the store lent the bundle but takes nothing back (a read-only copy, a lost connection)
    monkeypatch.setattr(TrackedRun, "find", classmethod(lambda cls, config, run: None))
    result = runner.invoke(app, [command, run_id])
    assert_one_line_error(result, f"the bundle of MLflow run {run_id} was fetched into a")
    assert "accuracy" not in result.output
    assert "nothing would keep the results" in result.output


def test_data_that_does_not_exist_is_one_line_naming_the_option(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """Not `set data.source to ...`: the user gave --data, not the recipe's data.source."""
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    before = {name: (copy / name).read_bytes() for name in (ARRAYS_FILE, META_FILE, "model.onnx")}
    nosuch = tmp_path / "nosuch"
    result = runner.invoke(app, ["profile", str(copy), "--data", str(nosuch)])
    assert_one_line_error(result, f"--data '{nosuch}' does not exist: give --data an existing")
    assert "data.source" not in result.output
    assert {name: (copy / name).read_bytes() for name in before} == before
