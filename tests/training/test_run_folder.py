"""The run folder without training: what a new run refuses, what --resume may change, cleanup."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.output import PHASE_LOGGER
from mlfactory.tracking import save_run_state
from mlfactory.training.run_folder import (
    RESUMABLE_KEYS,
    changed_keys,
    check_new_run,
    clean_checkpoints,
    resume_recipe,
)


def interrupted_run(out: Path, overrides: list[str]) -> Path:
    """A run folder as an interrupted `mlfactory train digits OVERRIDES --out OUT` leaves it."""
    recipe = load_recipe("digits", overrides)
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    state = {"mlflow_run_id": "0" * 32, "recipe": recipe.resolved, "overrides": overrides}
    (out / "run.json").write_text(json.dumps(state))
    return out


def test_resume_composes_the_stored_overrides_then_the_allowed_new_ones(tmp_path: Path) -> None:
    out = interrupted_run(tmp_path / "run", ["data.source=/data/digits", "trainer.lr=0.01"])
    recipe = resume_recipe("digits", ["trainer.max_epochs=9"], out)
    assert recipe.config.data.source == "/data/digits" and recipe.config.trainer.lr == 0.01
    assert recipe.config.trainer.max_epochs == 9
    assert recipe.overrides[-1] == "trainer.max_epochs=9" and len(recipe.overrides) == 3
    assert "trainer.max_epochs" in RESUMABLE_KEYS


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["data.test_fraction=0.25", "trainer.lr=0.02"], "data.test_fraction, trainer.lr"),
        (["data.source=/data/other"], "data.source:"),
        (["model.backbone=resnet18"], "model.backbone"),
        (["preprocess.crop_size=32", "preprocess.resize_size=32"], "preprocess.crop_size"),
    ],
)
def test_resume_refuses_changes_to_the_data_split_or_model(
    tmp_path: Path, overrides: list[str], named: str
) -> None:
    out = interrupted_run(tmp_path / "run", ["data.source=/data/digits"])
    with pytest.raises(ConfigError, match=rf"^--resume cannot change {named}") as caught:
        resume_recipe("digits", overrides, out)
    assert "\n" not in str(caught.value)


def test_an_edited_recipe_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("defaults:\n  - recipe_schema\n  - _self_\nmodality: image\n")
    recipe = load_recipe(str(path), ["data.source=/data/leaves"])
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    state = {"recipe": recipe.resolved, "overrides": ["data.source=/data/leaves"]}
    (out / "run.json").write_text(json.dumps({"mlflow_run_id": "x", **state}))
    path.write_text(path.read_text() + "trainer:\n  batch_size: 8\n")
    with caplog.at_level(logging.WARNING, logger=PHASE_LOGGER):
        resumed = resume_recipe(str(path), [], out)
    assert resumed.config.trainer.batch_size == recipe.config.trainer.batch_size != 8
    assert resumed.resolved == recipe.resolved  # the recipe in run.json, as it was
    assert [r.getMessage() for r in caplog.records] == [
        f"--resume: {path} changed trainer.batch_size since the run started; the run "
        "continues with the recipe in its run.json (give a change as an override: key=value)"
    ]
    path.unlink()  # the recipe file is not needed at all
    assert resume_recipe(str(path), [], out).resolved == recipe.resolved


def test_a_recipe_file_with_a_stores_password_resumes(tmp_path: Path) -> None:
    """run.json keeps the store's URL without its password; the recipe file that holds it is
    not a change of the run."""
    path = tmp_path / "mine.yaml"
    store = "postgresql+psycopg://mlf:s3cret@127.0.0.1:5432/mlflow"
    path.write_text(
        "defaults:\n  - recipe_schema\n  - _self_\nmodality: image\n"
        f"tracking:\n  tracking_uri: {store}\n"
    )
    recipe = load_recipe(str(path), ["data.source=/data/leaves"])
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    stored = {"recipe": recipe.resolved, "overrides": ["data.source=/data/leaves"]}
    save_run_state(out, {"mlflow_run_id": "x", **stored})
    assert "s3cret" not in (out / "run.json").read_text()
    resumed = resume_recipe(str(path), [], out)
    assert resumed.config.tracking.tracking_uri == store  # the file's, password and all


def test_a_new_run_refuses_an_interrupted_one_unless_forced(tmp_path: Path) -> None:
    out = interrupted_run(tmp_path / "run", [])
    with pytest.raises(ConfigError, match="holds an interrupted run: add --resume"):
        check_new_run(out, force=False)
    check_new_run(out, force=True)
    check_new_run(tmp_path / "empty", force=False)


def test_changed_keys_names_added_and_removed_keys() -> None:
    before = {"trainer": {"lr": 0.1}, "model": {"extra": {}}}
    after = {"trainer": {"lr": 0.1, "patience": 7}, "model": {"extra": {"d_model": 64}}}
    assert changed_keys(before, after) == ["model.extra", "model.extra.d_model", "trainer.patience"]


def test_a_setting_added_since_the_run_started_is_no_change_at_its_default(
    tmp_path: Path,
) -> None:
    # A run started before `model.prune_heads` existed: its run.json does not have the key.
    out = interrupted_run(tmp_path / "run", ["data.source=/data/digits"])
    state = json.loads((out / "run.json").read_text())
    del state["recipe"]["model"]["prune_heads"]
    (out / "run.json").write_text(json.dumps(state))
    assert resume_recipe("digits", ["trainer.max_epochs=9"], out).config.model.prune_heads == 0
    # Set to anything else, it would change the model.
    with pytest.raises(ConfigError, match=r"^--resume cannot change model.prune_heads"):
        resume_recipe("digits", ["model.prune_heads=0.5"], out)


def test_only_best_and_last_checkpoints_stay(tmp_path: Path) -> None:
    """A resumed run can leave its best weights in best-v1.ckpt: they become best.ckpt."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("best.ckpt", "best-v1.ckpt", "last.ckpt", "epoch=3-step=40.ckpt"):
        (folder / name).write_text(name)
    (folder / "notes.txt").write_text("not a checkpoint")
    clean_checkpoints(folder, str(folder / "best-v1.ckpt"))
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt", "notes.txt"]
    assert (folder / "best.ckpt").read_text() == "best-v1.ckpt"
