"""Where the demo keeps what it makes, the commands it prints, its folder's replacement, its
stop on SIGTERM and its quiet start under a read-only HOME; all without training."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from mlfactory.config.loader import load_recipe
from mlfactory.demo_folder import (
    DEMO_MARK,
    NEXT_RUN,
    claim_demo_folder,
    publish_next_run,
    removed_unless_finished,
)
from mlfactory.demo_places import (
    absolute_sqlite_uri,
    command_name,
    demo_overrides,
    demo_tracking_uri,
    next_commands,
    shown_path,
)
from mlfactory.errors import MlfactoryError


def test_the_demo_keeps_its_store_and_data_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "a demo's = 'folder'"
    config = load_recipe("digits", demo_overrides(out)).config
    assert config.tracking.tracking_uri == f"sqlite:///{out.resolve()}/mlruns.db"
    assert config.tracking.artifact_location == str(out.resolve() / "mlruns")
    assert config.data.cache_dir == str(out.resolve() / ".mlfactory" / "data")


def test_the_demo_uses_the_store_that_mlflow_tracking_uri_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    # the file in this folder, named so that it is the same file from any folder
    assert demo_tracking_uri(tmp_path / "out") == f"sqlite:///{tmp_path.resolve()}/other.db"
    config = load_recipe("digits", demo_overrides(tmp_path / "out")).config
    assert config.tracking.tracking_uri == f"sqlite:///{tmp_path.resolve()}/other.db"
    assert config.tracking.artifact_location is None  # the store's experiment decides
    server = "postgresql://mlflow:secret@db:5432/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    assert demo_tracking_uri(tmp_path / "out") == server
    assert absolute_sqlite_uri("sqlite:////abs/m.db?timeout=5") == "sqlite:////abs/m.db?timeout=5"
    assert absolute_sqlite_uri("sqlite:///m.db?timeout=5") == (
        f"sqlite:///{tmp_path.resolve()}/m.db?timeout=5"
    )


def test_printed_commands_name_the_store_and_work_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a shell whose PATH lacks this environment
    store = "postgresql://mlflow:secret@db:5432/mlflow"
    lines = next_commands(tmp_path / "bundle", "models:/digits@champion", store, tmp_path, 9)
    text = "\n".join(lines)
    assert "secret" not in text  # the password is never printed
    mlfactory = str(Path(sys.executable).parent / "mlfactory")
    champion = next(line for line in lines if "models:/digits@champion" in line)
    assert shlex.split(champion) == [
        "MLFLOW_TRACKING_URI=postgresql://mlflow:***@db:5432/mlflow",
        mlfactory,
        "serve",
        "models:/digits@champion",
        "--port",
        "8000",
    ]
    ui = shlex.split(next(line for line in lines if " ui " in line))
    assert ui[0] == str(Path(sys.executable).parent / "mlflow") and ui[-1].startswith("postgres")
    for command in (line for line in lines if line.startswith("  ")):
        assert shlex.split(command)[0] in {mlfactory, ui[0]} or command.strip().startswith(
            "MLFLOW_TRACKING_URI="
        )
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    assert command_name("mlfactory") == "mlfactory"  # found on the PATH: its short name


def test_a_path_is_shown_relative_to_the_current_folder_when_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "digits" / "3").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "digits")
    assert shown_path(tmp_path / "digits" / "3" / "0592.png") == "3/0592.png"
    assert shown_path(tmp_path / "other.png") == str(tmp_path.resolve() / "other.png")


def test_a_folder_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(MlfactoryError, match="cannot write the demo's folder there"):
        claim_demo_folder(tmp_path / "a-file" / "demo")


def test_a_failed_first_demo_removes_its_folder_and_a_rerun_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    made = claim_demo_folder(out)
    with pytest.raises(KeyboardInterrupt), removed_unless_finished(out, made):
        raise KeyboardInterrupt
    assert not out.exists()
    made = claim_demo_folder(out)
    with removed_unless_finished(out, made):
        (out / "bundle").mkdir()
    made = claim_demo_folder(out)
    with pytest.raises(RuntimeError), removed_unless_finished(out, made):
        raise RuntimeError("a failed rerun")
    assert (out / "bundle").is_dir() and (out / DEMO_MARK).is_file()


def test_a_new_run_replaces_the_earlier_demo_only_when_moved_in(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    claim_demo_folder(out)
    for name, text in (("bundle/model.onnx", "old"), ("predictions.db", "old log")):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    (out / "server.log").write_text("old server")
    (out / "mlruns.db").write_text("the store")
    (out / NEXT_RUN / "bundle").mkdir(parents=True)
    (out / NEXT_RUN / "bundle" / "model.onnx").write_text("new")
    (out / NEXT_RUN / "run.json").write_text("{}")
    assert (out / "bundle" / "model.onnx").read_text() == "old"  # intact until it is moved
    publish_next_run(out)
    assert (out / "bundle" / "model.onnx").read_text() == "new"
    assert (out / "run.json").is_file() and (out / "mlruns.db").read_text() == "the store"
    assert not (out / "predictions.db").exists() and not (out / "server.log").exists()
    assert not (out / NEXT_RUN).exists()
