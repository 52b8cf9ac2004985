"""What `--resume` continues with: the recipe its run.json stored (an edited or removed recipe
file changes nothing), what it records about itself (MLflow tags, run.json), and the code that
trained the run."""

from __future__ import annotations

import json
import shlex
from importlib.metadata import version
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.config.loader import load_recipe
from mlfactory.errors import Interrupted
from mlfactory.training.run_folder import resume_command
from mlfactory.training.stored_recipe import compose_stored
from mlfactory.training.train import train

from ..conftest import SMALL_NETWORK, fast_digits_overrides


class CtrlCAtEpoch(Callback):
    """Ctrl-C as the epoch `epoch` starts: `last.ckpt` holds the epochs before it."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


runner = CliRunner()


def test_compose_stored_needs_no_recipe_file(tmp_path: Path) -> None:
    stored = load_recipe("digits", ["trainer.patience=4", "data.source=/data/digits"])
    state = {"recipe": stored.resolved, "overrides": ["trainer.patience=4"]}
    recipe = compose_stored(state, str(tmp_path / "gone.yaml"), ["trainer.max_epochs=9"])
    assert recipe.config.trainer.patience == 4
    assert recipe.config.data.source == "/data/digits"
    assert recipe.config.trainer.max_epochs == 9
    assert recipe.reference == str(tmp_path / "gone.yaml")
    expected = {**stored.resolved, "trainer": {**stored.resolved["trainer"], "max_epochs": 9}}
    assert recipe.resolved == expected


def test_resume_ignores_an_edited_recipe_file_and_tags_what_it_changed(
    digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    overrides = [*fast_digits_overrides(digit_folder, tmp_path, epochs=2), *SMALL_NETWORK]
    file = project / "mine.yaml"
    file.write_text(yaml.safe_dump({"defaults": ["digits", "_self_"], "trainer": {"patience": 5}}))
    monkeypatch.chdir(project)
    recipe = load_recipe("mine.yaml", [*overrides, "model.freeze_backbone=true"])
    out = Path("run")
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        train(recipe, out, progress=False, callbacks=[CtrlCAtEpoch(1)])
    command = shlex.split(resume_command(recipe, out))
    state = json.loads((out / "run.json").read_text())
    run_id = state["mlflow_run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    tags = client.get_run(run_id).data.tags
    assert tags["mlfactory_version"] == version("mlfactory")
    assert f"torch {version('torch')}" in tags["library_versions"]
    assert tags["git_commit"] == "none"  # the project is no git checkout
    assert "threads " in tags["float_kernels"]
    assert "resumed" not in tags

    # Edited after the interruption: the resumed run keeps the recipe it started with.
    file.write_text(yaml.safe_dump({"defaults": ["digits", "_self_"], "trainer": {"patience": 1}}))
    monkeypatch.chdir(elsewhere)  # the printed command works from any folder
    resumed = runner.invoke(app, [*command[1:], "trainer.max_epochs=3"])
    assert resumed.exit_code == 0, resumed.output
    assert "mine.yaml changed trainer.patience since the run started" in resumed.output
    state = json.loads((project / "run" / "run.json").read_text())
    assert state["recipe"]["trainer"]["patience"] == 5
    assert state["recipe"]["trainer"]["max_epochs"] == 3
    assert [entry["after_epochs"] for entry in state["resumes"]] == [1]
    assert state["resumes"][0]["changed"] == ["trainer.max_epochs=3"]
    run = client.get_run(run_id)
    assert run.data.params["trainer.patience"] == "5"
    assert run.data.tags["resumed"] == "1"
    assert run.data.tags["resumed_after_epochs"] == "1"
    assert run.data.tags["resumed_with"] == "trainer.max_epochs=3"
    last = torch.load(project / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    trained = last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    history = [m.step for m in client.get_metric_history(run_id, "val/loss")]
    assert trained == 3, (last["epoch"], history)  # two of them after the resume
