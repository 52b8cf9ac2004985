"""What a run folder must be, and what a damaged one says: no traceback, nothing unrelated lost."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.tracking import load_run_state, save_run_state
from mlfactory.training.run_folder import (
    FolderInUse,
    check_new_run,
    clear_previous_run,
    resume_command,
    resume_recipe,
    run_folder_lock,
)
from mlfactory.training.run_start import check_more_epochs, removed_if_the_start_fails

from .test_run_folder import interrupted_run


@pytest.mark.parametrize("content", ['{"mlflow_run_id": "ab', "[]", "{}", "\xff"])
def test_a_damaged_run_json_is_one_clear_error(tmp_path: Path, content: str) -> None:
    out = interrupted_run(tmp_path / "run", [])
    (out / "run.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"run\.json is damaged .*cannot be resumed: start it"):
        resume_recipe("digits", [], out)
    with pytest.raises(ConfigError, match="missing or damaged, so it cannot be resumed: add --f"):
        check_new_run(out, force=False)


def test_a_missing_run_json_is_named_not_the_checkpoint_that_is_there(tmp_path: Path) -> None:
    out = interrupted_run(tmp_path / "run", [])
    (out / "run.json").unlink()
    with pytest.raises(ConfigError, match=r"run\.json is missing, so the run in .* cannot be"):
        resume_recipe("digits", [], out)


def test_run_json_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_run_state(tmp_path, {"mlflow_run_id": "first"})

    def disk_full(self: Path, text: str, encoding: str | None = None) -> int:
        with open(self, "w", encoding=encoding) as handle:
            handle.write(text[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        save_run_state(tmp_path, {"mlflow_run_id": "second"})
    assert load_run_state(tmp_path) == {"mlflow_run_id": "first"}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "code"])
def test_a_damaged_last_checkpoint_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    import torch

    last = tmp_path / "last.ckpt"
    torch.save({"epoch": 0, "state_dict": {"w": torch.zeros(1000)}}, last)
    whole = last.read_bytes()
    # A pickle that names code to run: torch's safe loader refuses it, and its message says
    # loading it unsafely would work, which no user should be told.
    code = pickle.dumps({"epoch": Path("x")})
    damaged = {"truncate": whole[:2000], "garbage": b"hello world", "empty": b"", "code": code}
    last.write_bytes(damaged[damage])
    with pytest.raises(ConfigError) as caught:
        check_more_epochs(last, 5)
    message = str(caught.value)
    assert message.startswith(f"--resume: the checkpoint {last} is damaged or unreadable (")
    assert "--force" in message and "restore the file" in message and "\n" not in message
    assert "weights_only" not in message and "will likely succeed" not in message


def test_out_must_be_a_run_folder_empty_or_new(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"^--out .*afile is a file: give a folder$"):
        check_new_run(tmp_path / "afile", force=True)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    with pytest.raises(ConfigError, match="is a bundle folder"):
        check_new_run(bundle, force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match=r"holds thesis\.tex and is not a run folder"):
        check_new_run(other, force=True)
    (tmp_path / "empty").mkdir()
    check_new_run(tmp_path / "empty", force=False)


@pytest.mark.parametrize("where", ["checkpoints/precious.pt", "bundle/notes.txt"])
def test_force_replaces_only_what_a_run_wrote(tmp_path: Path, where: str) -> None:
    out = interrupted_run(tmp_path / "run", [])
    (out / "bundle").mkdir()
    (out / "bundle" / "bundle.json").write_text("{}")
    (out / where).write_text("mine")
    with pytest.raises(ConfigError, match=rf"{where} was not written by a training run"):
        check_new_run(out, force=True)
    assert (out / where).read_text() == "mine"
    (out / where).unlink()
    check_new_run(out, force=True)
    clear_previous_run(out)  # a new run's start: the old run's checkpoints and bundle go
    assert not (out / "bundle").exists() and not list((out / "checkpoints").iterdir())
    assert not (out / "run.json").exists()  # it named the old run
    check_new_run(out, force=False)  # what is left is a run folder a new run may use


def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with (
        run_folder_lock(out),
        pytest.raises(ConfigError, match="is in use by another training run"),
        run_folder_lock(out),
    ):
        pass
    # A run killed while holding the folder leaves no lock behind.
    script = (
        "import os, sys; from pathlib import Path; "
        "from mlfactory.training.run_folder import run_folder_lock; "
        "lock = run_folder_lock(Path(sys.argv[1])); lock.__enter__(); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", script, str(out)]).returncode == 9
    with run_folder_lock(out):
        pass


def test_the_resume_hint_quotes_paths_and_forces_over_a_bundle(tmp_path: Path) -> None:
    recipe = load_recipe("digits")
    out = tmp_path / "my run"
    assert resume_command(recipe, out) == f"mlfactory train digits --out '{out}' --resume"
    (out / "bundle").mkdir(parents=True)
    (out / "bundle" / "bundle.json").write_text(json.dumps({"name": "digits", "version": "1"}))
    assert resume_command(recipe, out).endswith("--resume --force")


def test_a_run_refused_a_folder_another_run_just_made_leaves_that_folder_alone(
    tmp_path: Path,
) -> None:
    """Two runs into a new folder at once: the one refused must not remove, as a failed start
    of its own, the folder the other run made meanwhile and trains in."""
    out = tmp_path / "new" / "run"
    refused = pytest.raises(FolderInUse, match="is in use by another training run")
    # `out` did not exist when this run began; the other run makes it and holds it.
    with refused, removed_if_the_start_fails(out), run_folder_lock(out):
        (out / "run.json").write_text('{"mlflow_run_id": "other"}')
        with run_folder_lock(out):  # this run's turn
            pass
    assert (out / "run.json").read_text() == '{"mlflow_run_id": "other"}'
    with pytest.raises(ConfigError, match="no data"), removed_if_the_start_fails(tmp_path / "b"):
        (tmp_path / "b").mkdir()
        raise ConfigError("no data")
    assert not (tmp_path / "b").exists()  # a failed start of its own is still removed
