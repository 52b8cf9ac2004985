"""Interrupted, forced, deleted and concurrent runs of `mlfactory train`, on real digits.

Ctrl-C is raised in-process where a user's would land (the test replaces the step with one that
raises KeyboardInterrupt); the command a run prints to continue it is then run as printed.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from typer.testing import CliRunner, Result

import mlfactory.training.publish
import mlfactory.training.train
from mlfactory.cli import app
from mlfactory.output import phase_log
from mlfactory.training.run_folder import run_folder_lock

from ..conftest import SMALL_NETWORK, fast_digits_overrides

runner = CliRunner()
EPOCHS = 2


def ctrl_c(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


def overrides(digit_folder: Path, workdir: Path) -> list[str]:
    # The small network, frozen, keeps the trainings short.
    return [
        *fast_digits_overrides(digit_folder, workdir, epochs=EPOCHS),
        *SMALL_NETWORK,
        "model.freeze_backbone=true",
    ]


def resume_hint(result: Result) -> list[str]:
    """The arguments of the command an interrupted run prints to continue it."""
    assert result.exit_code == 130, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("interrupted;")]
    words = shlex.split(line.split("continue it with: ", 1)[1])
    assert words[:2] == ["mlfactory", "train"], line
    return words[1:]


def run_id(out: Path) -> str:
    return str(json.loads((out / "run.json").read_text())["mlflow_run_id"])


def client(workdir: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (the lock file aside), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


class EpochWatch(logging.Handler):
    """Reads `last.ckpt` each time an epoch line is printed: (printed epoch, its epoch count)."""

    def __init__(self, last: Path) -> None:
        super().__init__(logging.INFO)
        self.last = last
        self.seen: list[tuple[int, int | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if not line.startswith("epoch "):
            return
        printed = int(line.split()[1].split("/")[0])
        if not self.last.is_file():
            self.seen.append((printed, None))
            return
        checkpoint = torch.load(self.last, map_location="cpu", weights_only=True)
        processed = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
        assert processed == checkpoint["epoch"] + 1  # saved at the end of that epoch
        self.seen.append((printed, processed))


@dataclass
class InterruptedInPublish:
    """A run stopped by Ctrl-C while it published, then continued with the printed command."""

    workdir: Path
    out: Path
    interrupted: Result
    status_after_ctrl_c: str
    entries_after_ctrl_c: list[str]
    resumed: Result
    epoch_lines: list[tuple[int, int | None]] = field(default_factory=list)


@pytest.fixture(scope="module")
def stopped_in_publish(
    digit_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InterruptedInPublish]:
    workdir = tmp_path_factory.mktemp("stopped-in-publish")
    out = workdir / "run"
    watch = EpochWatch(out / "checkpoints" / "last.ckpt")
    phase_log.addHandler(watch)
    try:
        with pytest.MonkeyPatch.context() as mp:
            # After the network is exported to .bundle.partial/: its evaluation is recorded.
            mp.setattr(mlfactory.training.publish, "record_evaluation", ctrl_c)
            args = ["train", "digits", *overrides(digit_folder, workdir), "--out", str(out)]
            interrupted = runner.invoke(app, args)
    finally:
        phase_log.removeHandler(watch)
    status = client(workdir).get_run(run_id(out)).info.status
    entries = sorted(p.name for p in out.iterdir())
    resumed = runner.invoke(app, resume_hint(interrupted))
    yield InterruptedInPublish(
        workdir, out, interrupted, status, entries, resumed, epoch_lines=watch.seen
    )


def test_ctrl_c_while_publishing_leaves_no_bundle_and_the_hint_finishes_the_run(
    stopped_in_publish: InterruptedInPublish,
) -> None:
    run = stopped_in_publish
    assert "Traceback" not in run.interrupted.output
    assert "bundle" not in run.entries_after_ctrl_c
    assert run.status_after_ctrl_c == "KILLED"
    assert run.resumed.exit_code == 0, run.resumed.output
    meta = json.loads((run.out / "bundle" / "bundle.json").read_text())
    assert meta["mlflow_run_id"] == run_id(run.out)
    assert meta["metrics"]["test"]["split_size"] > 0
    assert 0.0 <= meta["metrics"]["test"]["accuracy"] <= 1.0
    assert client(run.workdir).get_run(run_id(run.out)).info.status == "FINISHED"
    assert not (run.out / ".bundle.partial").exists()


def test_ctrl_c_while_publishing_leaves_no_partial_bundle(
    stopped_in_publish: InterruptedInPublish,
) -> None:
    assert ".bundle.partial" not in stopped_in_publish.entries_after_ctrl_c


def test_an_epoch_line_comes_once_last_ckpt_holds_that_epoch(
    stopped_in_publish: InterruptedInPublish,
) -> None:
    assert stopped_in_publish.epoch_lines == [(n, n) for n in range(1, EPOCHS + 1)]


@pytest.fixture
def finished_copy(stopped_in_publish: InterruptedInPublish, tmp_path: Path) -> Path:
    """A copy of the finished run folder (its MLflow run is the shared run's)."""
    assert stopped_in_publish.resumed.exit_code == 0, stopped_in_publish.resumed.output
    return Path(shutil.copytree(stopped_in_publish.out, tmp_path / "run"))


def test_force_over_a_finished_run_removes_its_bundle_at_the_start(
    stopped_in_publish: InterruptedInPublish,
    finished_copy: Path,
    digit_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, old_run = finished_copy, run_id(finished_copy)
    args = overrides(digit_folder, stopped_in_publish.workdir)
    monkeypatch.setattr(mlfactory.training.train, "publish", ctrl_c)  # after the fit
    interrupted = runner.invoke(app, ["train", "digits", *args, "--out", str(out), "--force"])
    hint = resume_hint(interrupted)
    assert not (out / "bundle").exists()  # no bundle of another run than run.json's
    assert run_id(out) != old_run
    assert hint[-1] == "--resume"  # nothing to replace: no --force
    monkeypatch.undo()
    resumed = runner.invoke(app, hint)
    assert resumed.exit_code == 0, resumed.output
    meta = json.loads((out / "bundle" / "bundle.json").read_text())
    assert meta["mlflow_run_id"] == run_id(out) != old_run
    assert meta["metrics"]["test"]["split_size"] > 0


def test_force_stopped_while_its_data_is_prepared_leaves_no_trace_of_the_old_run(
    stopped_in_publish: InterruptedInPublish,
    finished_copy: Path,
    digit_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old run's bundle is gone at the start of a --force run: its run.json goes with it,
    so a Ctrl-C before the new run has an MLflow run leaves a folder that names no run."""
    out = finished_copy
    args = overrides(digit_folder, stopped_in_publish.workdir)
    monkeypatch.setattr(mlfactory.training.train, "prepare_fit", ctrl_c)
    stopped = runner.invoke(app, ["train", "digits", *args, "--out", str(out), "--force"])
    assert stopped.exit_code == 130, stopped.output
    assert not (out / "run.json").exists() and not (out / "bundle").exists()
    assert not list((out / "checkpoints").glob("*.ckpt"))
    resumed = runner.invoke(app, ["train", "digits", "--out", str(out), "--resume"])
    assert resumed.exit_code == 2, resumed.output
    assert "no interrupted run in" in resumed.output.strip().splitlines()[-1]


def test_resuming_a_run_deleted_in_mlflow_is_one_error_before_training(
    stopped_in_publish: InterruptedInPublish, finished_copy: Path
) -> None:
    out, deleted = finished_copy, run_id(finished_copy)
    store = client(stopped_in_publish.workdir)
    before = snapshot(out / "checkpoints")
    store.delete_run(deleted)
    try:
        result = runner.invoke(app, ["train", "digits", "--out", str(out), "--resume", "--force"])
    finally:
        store.restore_run(deleted)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [result.output.strip().splitlines()[-1]], result.output
    assert f"MLflow run {deleted}" in errors[0] and "was deleted" in errors[0]
    assert f"mlflow runs restore --run-id {deleted}" in errors[0]
    assert snapshot(out / "checkpoints") == before
    assert store.get_run(deleted).info.status == "FINISHED"


def test_resuming_a_run_the_store_does_not_hold_is_one_error_before_training(
    finished_copy: Path,
) -> None:
    """As after `mlflow gc` deleted it for good, or a run.json of another store's run."""
    out, gone = finished_copy, "0" * 32
    state = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**state, "mlflow_run_id": gone}))
    before = snapshot(out / "checkpoints")
    result = runner.invoke(app, ["train", "digits", "--out", str(out), "--resume", "--force"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: --resume: the MLflow run {gone} of {out} is not in the store")
    assert "start again with --force (without --resume)" in last
    assert snapshot(out / "checkpoints") == before


def test_a_second_run_into_a_folder_in_use_is_refused_and_leaves_it_be(
    stopped_in_publish: InterruptedInPublish, finished_copy: Path, digit_folder: Path
) -> None:
    out, workdir = finished_copy, stopped_in_publish.workdir
    args = [*overrides(digit_folder, workdir), "--out", str(out), "--force"]
    before = snapshot(out)
    store = client(workdir)
    experiment = store.get_run(run_id(out)).info.experiment_id
    runs_before = len(store.search_runs([experiment]))
    with run_folder_lock(out):  # the first run, still training there
        second = runner.invoke(app, ["train", "digits", *args])
        assert snapshot(out) == before  # its bundle, run.json and checkpoints are all there
    assert second.exit_code == 2, second.output
    lines = [line for line in second.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "is in use by another training run" in lines[-1]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], second.output
    assert "Traceback" not in second.output
    assert len(store.search_runs([experiment])) == runs_before  # no MLflow run was started
    with run_folder_lock(out):  # and the refused run holds nothing
        pass
