"""The MLflow Model Registry: a trained bundle registered as versions of a model, aliases moved
between them, and every command's target naming a version, on a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.cli import app
from mlfactory.errors import BundleError
from mlfactory.predictor import Predictor
from mlfactory.registry import (
    BUNDLE_VERSION_TAG,
    DIGEST_TAG,
    bundle_digest,
    download_run_bundle,
    find_version,
    register_bundle,
)
from mlfactory.serving.process import free_port
from mlfactory.targets import downloads_removed, resolve_bundle
from mlfactory.training.train import TrainResult
from tests.conftest import untraced_env
from tests.serving.tiny_bundles import tiny_bundle
from tests.test_cli import assert_one_line_error
from tests.unreadable import deny_copying, deny_listing

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new MLflow SQLite store of the test's own, which the commands use."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def log_run(trained: TrainResult, store: str, folder: Path) -> Path:
    """A copy of the trained bundle in `folder`/bundle, logged to a new run of `store` as
    training logs it (the run id in bundle.json, the folder as the run's `bundle` artifact)."""
    client = MlflowClient(store)
    experiment = client.create_experiment(f"digits-{folder.name}", str(folder / "artifacts"))
    run = client.create_run(experiment, run_name="digits")
    bundle_dir = folder / "bundle"
    shutil.copytree(trained.bundle.path, bundle_dir)
    bundle = load_bundle(bundle_dir)
    bundle.meta.mlflow_run_id = run.info.run_id
    bundle.save_meta()
    client.log_artifacts(run.info.run_id, str(bundle_dir), "bundle")
    client.set_terminated(run.info.run_id)
    return folder


def test_register_versions_aliases_and_every_target_form(
    trained_digits: TrainResult, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Downloads go to a temporary folder of this test's own: the one below checks what is left
    # in it, and tests running beside this one (pytest-xdist) download into the system's.
    downloads_folder = tmp_path / "tmp"
    downloads_folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads_folder))
    first = log_run(trained_digits, store, tmp_path / "first")
    second = log_run(trained_digits, store, tmp_path / "second")
    image = str(trained_digits.dataset.split("test")[0].path)

    made = runner.invoke(app, ["register", str(first), "--alias", "champion"])
    assert made.exit_code == 0, made.output
    run_id = load_bundle(first / "bundle").meta.mlflow_run_id
    assert made.output.strip() == (
        f"registered as models:/digits/1 (alias champion): the bundle of MLflow run {run_id} "
        f"in {store}"
    )
    version = MlflowClient(store).get_model_version("digits", "1")
    assert version.run_id == run_id
    assert version.tags[DIGEST_TAG] == bundle_digest(first / "bundle")
    assert version.tags[BUNDLE_VERSION_TAG] == trained_digits.bundle.meta.version
    test = trained_digits.bundle.meta.metrics["test"]
    assert version.tags["mlfactory.test_accuracy"] == f"{test['accuracy']:.4f}"
    assert version.tags["mlfactory.test_macro_f1"] == f"{test['f1_macro']:.4f}"

    # a run id registers what MLflow holds; --name another model, no alias
    other = load_bundle(second / "bundle").meta.mlflow_run_id
    assert other is not None
    registered, new = register_bundle(resolve_bundle(other), "digits-candidate")
    assert (registered.uri, registered.aliases, new) == ("models:/digits-candidate/1", (), True)
    newer = runner.invoke(app, ["register", str(second), "--alias", "challenger"])
    assert newer.exit_code == 0, newer.output
    assert newer.output.startswith("registered as models:/digits/2 (alias challenger)")
    # the same files again: no second version, the alias is set on the first
    twice = runner.invoke(app, ["register", other, "--alias", "candidate"])
    assert twice.exit_code == 0, twice.output
    assert twice.output.startswith(
        "already registered as models:/digits/2 (alias candidate, challenger)"
    )
    assert len(MlflowClient(store).search_model_versions("name = 'digits'")) == 2

    local = Predictor(load_bundle(first / "bundle")).predict([Path(image).read_bytes()])
    for target, run in (
        ("models:/digits@champion", run_id),
        ("models:/digits/1", run_id),
        ("models:/digits@challenger", other),
        ("models:/digits/latest", other),
        ("models:/digits-candidate/1", other),
    ):
        fetched = resolve_bundle(target)
        assert fetched.meta.mlflow_run_id == run, target
        source = (first if run == run_id else second) / "bundle"
        assert bundle_digest(fetched.path) == bundle_digest(source)
        assert Predictor(fetched).predict([Path(image).read_bytes()]) == local
        predicted = runner.invoke(app, ["predict", target, image, "--json"])
        assert predicted.exit_code == 0, predicted.output
        assert json.loads(predicted.output)[0]["label"] == local[0].label

    # the champion's recipe, trained again with a new override (--show-config: not trained);
    # the bundle fetched for its recipe is not left behind
    downloads = set(downloads_folder.glob("mlfactory-model-*"))
    assert downloads  # the versions fetched above
    shown = runner.invoke(
        app, ["train", "models:/digits@champion", "trainer.max_epochs=1", "--show-config"]
    )
    assert shown.exit_code == 0, shown.output
    stored = trained_digits.bundle.meta.config
    assert yaml.safe_load(shown.output) == {
        **stored,
        "version": None,  # numbered by the new run
        "trainer": {**stored["trainer"], "max_epochs": 1},
    }
    assert set(downloads_folder.glob("mlfactory-model-*")) == downloads

    # a version copied out, as a serving image is built from it
    copied = str(tmp_path / "b")
    fetched_out = runner.invoke(app, ["fetch", "models:/digits@champion", "--out", copied])
    assert fetched_out.exit_code == 0, fetched_out.output
    assert fetched_out.output.strip() == (
        f"models:/digits/1 (bundle digits {trained_digits.bundle.meta.version}) written to {copied}"
    )
    assert bundle_digest(tmp_path / "b") == bundle_digest(first / "bundle")
    again = runner.invoke(app, ["fetch", "models:/digits/2", "--out", copied])
    assert_one_line_error(again, "exists: give --out a new folder")
    under_a_file = str(tmp_path / "b" / "bundle.json" / "copy")
    unwritable = runner.invoke(app, ["fetch", "models:/digits/2", "--out", under_a_file])
    assert_one_line_error(unwritable, f"cannot write {under_a_file}: Not a directory")

    # promote: the alias moves to version 2, and back (a rollback is the same command)
    promoted = runner.invoke(app, ["register", "models:/digits@challenger", "--alias", "champion"])
    assert promoted.exit_code == 0, promoted.output
    assert promoted.output.startswith(
        "now models:/digits/2 (alias candidate, challenger, champion)"
    )
    assert find_version("models:/digits@champion").version == "2"
    rolled = runner.invoke(app, ["register", "models:/digits/1", "--alias", "champion"])
    assert rolled.exit_code == 0, rolled.output
    assert find_version("models:/digits@champion").run_id == run_id
    assert sorted(find_version("models:/digits/2").aliases) == ["candidate", "challenger"]


def test_a_fetch_that_cannot_read_the_bundle_names_the_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy goes to a temporary sibling of --out, renamed into place only when complete: a
    file of the bundle the user may not read is one line naming it, and a retry can succeed."""
    source = tiny_bundle(tmp_path / "b", "image")
    (source / "notes").mkdir()
    (source / "notes" / "card.md").write_text("digits, 16x16")
    out = tmp_path / "f"
    with monkeypatch.context() as denied:
        deny_copying(denied, source / "model.onnx")
        result = runner.invoke(app, ["fetch", str(source), "--out", str(out)])
    assert_one_line_error(result, f"cannot read {source / 'model.onnx'}: Permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no partial copy, no temporary
    with monkeypatch.context() as denied:
        deny_listing(denied, source / "notes")
        result = runner.invoke(app, ["fetch", str(source), "--out", str(out)])
    assert_one_line_error(result, f"cannot copy {source / 'notes'} to {out}: ")
    assert "Permission denied" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]

    result = runner.invoke(app, ["fetch", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert bundle_digest(out) == bundle_digest(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "f"]


def test_a_changed_bundle_is_not_registered_and_a_relogged_version_not_served(
    trained_digits: TrainResult, store: str, tmp_path: Path
) -> None:
    folder = log_run(trained_digits, store, tmp_path / "run")
    bundle = folder / "bundle"
    (bundle / "notes.txt").write_text("added after the run logged the bundle")
    changed = runner.invoke(app, ["register", str(folder)])
    assert_one_line_error(changed, "is not the same as")
    assert not MlflowClient(store).search_registered_models()

    (bundle / "notes.txt").unlink()
    assert runner.invoke(app, ["register", str(folder)]).exit_code == 0
    # the run's artifact logged again (as `mlfactory profile` does): version 1 no longer is it
    (bundle / "notes.txt").write_text("logged again")
    run_id = load_bundle(bundle).meta.mlflow_run_id
    MlflowClient(store).log_artifacts(str(run_id), str(bundle), "bundle")
    image = str(trained_digits.dataset.split("test")[0].path)
    refused = runner.invoke(app, ["predict", "models:/digits/1", image])
    assert_one_line_error(refused, "has changed since it was registered")
    again = runner.invoke(app, ["register", run_id])  # what the error says to do
    assert again.exit_code == 0, again.output
    fetched = resolve_bundle("models:/digits/2").path
    assert (fetched / "notes.txt").read_text() == "logged again"


def test_an_alias_mlflow_refuses_registers_nothing(
    trained_digits: TrainResult, store: str, tmp_path: Path
) -> None:
    """Refused after the new version, an alias left that version registered without it."""
    folder = log_run(trained_digits, store, tmp_path / "run")
    for aliases, message in (
        (["bad alias!"], "--alias 'bad alias!': MLflow refuses it: Invalid alias name"),
        (["champion", "latest"], "--alias 'latest': MLflow refuses it: 'latest' alias name"),
        (["v2"], "--alias 'v2': MLflow refuses it: Version alias name 'v2' is reserved"),
    ):
        args = [arg for alias in aliases for arg in ("--alias", alias)]
        result = runner.invoke(app, ["register", str(folder), *args])
        assert_one_line_error(result, message)
        assert "nothing was changed" in result.output
        assert MlflowClient(store).search_registered_models() == []
    assert runner.invoke(app, ["register", str(folder), "--alias", "champion"]).exit_code == 0
    moved = runner.invoke(app, ["register", "models:/digits/1", "--alias", "a", "--alias", "v1"])
    assert_one_line_error(moved, "--alias 'v1': MLflow refuses it")
    assert MlflowClient(store).get_registered_model("digits").aliases == {"champion": 1}


def test_registry_errors_are_one_line(
    trained_digits: TrainResult, store: str, tmp_path: Path
) -> None:
    folder = log_run(trained_digits, store, tmp_path / "run")
    empty = runner.invoke(app, ["predict", "models:/digits@champion", "x.png"])
    assert_one_line_error(empty, "no registered model 'digits' (none registered yet) in ")
    assert runner.invoke(app, ["register", str(folder), "--alias", "champion"]).exit_code == 0
    for target, message in (
        (
            "models:/nope@champion",
            f"models:/nope@champion: no registered model 'nope' (registered: digits) in {store}",
        ),
        (
            "models:/digits@nope",
            "models:/digits@nope: model 'digits' has no alias 'nope' (its "
            "aliases: champion -> version 1; mlfactory register models:/digits/VERSION --alias "
            f"nope sets it) in {store}",
        ),
        (
            "models:/digits/7",
            f"models:/digits/7: model 'digits' has no version 7 (it has version 1) in {store}",
        ),
        ("models:/digits", "'models:/digits' is not a registered model: write models:/NAME/"),
        ("models:/nope/latest", "models:/nope/latest: no registered model 'nope' (registered: "),
    ):
        assert_one_line_error(runner.invoke(app, ["predict", target, "x.png"]), message)
    MlflowClient(store).create_registered_model("empty")
    empty = runner.invoke(app, ["predict", "models:/empty/latest", "x.png"])
    assert_one_line_error(
        empty, f"models:/empty/latest: model 'empty' has no version yet in {store}"
    )
    slashed = runner.invoke(app, ["register", str(folder), "--name", "team/digits"])
    assert_one_line_error(slashed, "registered model name 'team/digits': use one without '/'")
    unnamed = runner.invoke(app, ["register", str(folder), "--name", ""])
    assert_one_line_error(unnamed, "--name is empty")
    already = runner.invoke(app, ["register", "models:/digits/1"])
    assert_one_line_error(already, "is registered already: give --alias")
    for target, message in (  # without --alias, a URI that names nothing says so
        ("models:/digits/abc", "'models:/digits/abc' is not a registered model"),
        ("models:/digits/7", "models:/digits/7: model 'digits' has no version 7"),
    ):
        assert_one_line_error(runner.invoke(app, ["register", target]), message)
    reserved = runner.invoke(app, ["register", "models:/digits/1", "--alias", "latest"])
    assert_one_line_error(reserved, "--alias 'latest': MLflow refuses it")
    profiled = runner.invoke(app, ["profile", "models:/digits@champion"])
    assert_one_line_error(profiled, "is a registered version, which does not change")

    untracked = tmp_path / "untracked"
    shutil.copytree(folder / "bundle", untracked)
    bundle = load_bundle(untracked)
    bundle.meta.mlflow_run_id = None
    bundle.save_meta()
    assert_one_line_error(runner.invoke(app, ["register", str(untracked)]), "has no MLflow run")
    with pytest.raises(BundleError, match="is not in the store"):
        bundle.meta.mlflow_run_id = "0" * 32
        register_bundle(bundle)


def test_an_mlflow_server_that_does_not_answer_is_one_line_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not MLflow's retries with back-off (minutes of warnings), one line for each target."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for target in ("models:/digits@champion", "0" * 32):
        result = runner.invoke(app, ["predict", target, "x.png"])
        assert_one_line_error(result, f"the MLflow server {url} does not answer")
    registering = runner.invoke(app, ["register", "models:/digits/1", "--alias", "champion"])
    assert_one_line_error(registering, f"the MLflow server {url} does not answer")


def test_a_sqlite_store_that_is_not_there_is_named_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in another folder than its mlruns.db, a command says so, and leaves no empty store
    behind (MLflow would create one and then find nothing in it)."""
    missing = tmp_path / "mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    for target in ("models:/digits@champion", "0" * 32):
        result = runner.invoke(app, ["predict", target, "x.png"])
        assert_one_line_error(result, f"no MLflow store at {missing}")
    assert not missing.exists()


def test_a_sqlite_registry_that_is_not_there_is_named_not_created(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLFLOW_REGISTRY_URI is checked as the store is: a registry started empty by mistake
    would hold versions nobody finds; an empty file there starts one on purpose."""
    MlflowClient(store).create_experiment("present")
    missing = tmp_path / "registry.db"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{missing}")
    fetch = ["fetch", "models:/digits/1", "--out", str(tmp_path / "out")]
    for args in (["register", "models:/digits/1", "--alias", "x"], fetch):
        result = runner.invoke(app, args)
        assert_one_line_error(result, f"no MLflow registry at {missing} (MLFLOW_REGISTRY_URI")
    assert not missing.exists()
    missing.touch()  # MLflow makes its tables there (its INFO lines: the CLI's main quiets them)
    started = runner.invoke(app, ["predict", "models:/digits/1", "x.png"])
    assert started.exit_code == 2
    assert started.output.strip().splitlines()[-1] == (
        "error: models:/digits/1: no registered model 'digits' (none registered yet) in "
        f"sqlite:///{missing}"
    )


def test_registry_calls_leave_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI for the whole process: a later
    call without a store would silently use the store of an earlier one."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    MlflowClient(store).create_experiment("empty")
    with pytest.raises(BundleError, match="is not in the store"):
        download_run_bundle("0" * 32, store=store)
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_fetch_into_the_bundle_itself_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    source = tiny_bundle(tmp_path / "b", "image")
    before, names = bundle_digest(source), sorted(p.name for p in source.iterdir())
    for out in (source / "copy", source):
        result = runner.invoke(app, ["fetch", str(source), "--out", str(out / "deeper")])
        assert_one_line_error(result, f"is inside the bundle {source}: give a folder outside it")
    assert bundle_digest(source) == before
    assert sorted(p.name for p in source.iterdir()) == names  # no copy, no temporary folder


def test_a_fetched_bundle_lasts_as_long_as_its_command_and_shows_no_bar(
    trained_digits: TrainResult, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run id's or a version's bundle is fetched into a temporary folder, removed when the
    command ends (it left one per call); MLflow's "Downloading artifacts" bar does not reach a
    stderr that is no terminal, whether or not the command set up its output."""
    folder = log_run(trained_digits, store, tmp_path / "run")
    run_id = str(load_bundle(folder / "bundle").meta.mlflow_run_id)
    assert runner.invoke(app, ["register", str(folder)]).exit_code == 0
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = untraced_env({"TMPDIR": str(temporary), "MLFLOW_TRACKING_URI": store})
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)  # set by earlier commands in-process
    for target in (run_id, "models:/digits/1"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mlfactory.cli",
                "report",
                target,
                "--out",
                str(tmp_path / "c.html"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Downloading artifacts" not in done.stderr
        assert list(temporary.iterdir()) == [], target
    # in a process that goes on (a command's function): removed when the scope ends
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    with downloads_removed():
        for target in (run_id, "models:/digits/1"):
            assert resolve_bundle(target).path.is_relative_to(temporary)
        assert len(list(temporary.iterdir())) == 2
    assert list(temporary.iterdir()) == []
