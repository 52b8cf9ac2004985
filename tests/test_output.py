"""What `mlfactory train` prints, run as a user runs it (a process, stderr not a TTY).

One line per phase, none of the third-party noise that Lightning, MLflow, transformers and the
ONNX exporter print by default, nothing twice; `-v` shows everything, still once; Ctrl-C says
how to resume and marks the MLflow run KILLED.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch

import mlfactory
from mlfactory.output import QUIET_ENV, configure_output

from .conftest import SMALL_NETWORK, fast_digits_overrides, untraced_env

REUTERS = Path(__file__).parent / "fixtures" / "text" / "reuters_r8_sample.jsonl"
# What a default run printed before: adverts, hardware lines, set-up chatter, known warnings.
NOISE = (
    "litlogger",
    "GPU available",
    "TPU available",
    "LeafSpec",
    "log_every_n_steps",
    "TracerWarning",
    "Loading weights",
    "Creating initial MLflow",
    "Experiment with name",
    "does not have many workers",
    "aten::index",
    "Warning",
    "warn(",
)


def mlfactory_process(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    # In-process CLI tests of this session set the quiet environment: a user's shell has none.
    inherited = {k: v for k, v in untraced_env().items() if k not in QUIET_ENV}
    env = {
        **inherited,
        "PYTHONPATH": str(Path(mlfactory.__file__).parents[1]),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mlfactory.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Finished:
    """A finished `mlfactory train` process: its exit code, output and working folder."""

    code: int
    stdout: str
    stderr: str
    workdir: Path


def text_training(workdir: Path, *extra: str) -> subprocess.Popen[str]:
    args = [
        "train",
        "text",
        f"data.source={REUTERS}",
        f"data.cache_dir={workdir / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{workdir / 'mlruns.db'}",
        f"tracking.artifact_location={workdir / 'artifacts'}",
        "trainer.max_epochs=1",
        "preprocess.max_length=32",
        "--out",
        str(workdir / "run"),
        *extra,
    ]
    return mlfactory_process(args, workdir)


def finished(process: subprocess.Popen[str], workdir: Path) -> Finished:
    stdout, stderr = process.communicate(timeout=900)
    return Finished(process.returncode, stdout, stderr, workdir)


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    """The same training by default and with -v, started together: each process spends most of
    its time importing the training stack on one core, so the two share 2 cores well (their
    output is read on threads, so neither waits on a full pipe)."""
    runs = {"default": (), "verbose": ("-v",)}
    folders = {name: tmp_path_factory.mktemp(f"text-{name}") for name in runs}
    processes = {name: text_training(folders[name], *extra) for name, extra in runs.items()}
    with ThreadPoolExecutor(len(runs)) as pool:
        done = {name: pool.submit(finished, processes[name], folders[name]) for name in runs}
        return {name: future.result() for name, future in done.items()}


def test_torch_stopping_the_other_ranks_is_quiet_unless_verbose() -> None:
    """torch's own stderr handler prints "Terminating process N via signal SIGTERM" when a rank
    of ddp_spawn fails; the root handler's filter never sees it, its level keeps it out."""
    import torch.multiprocessing.spawn  # noqa: F401  (torch sets up its loggers)

    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    try:
        configure_output(False)
        assert not spawn_log.isEnabledFor(logging.WARNING)
        assert spawn_log.isEnabledFor(logging.ERROR)
        configure_output(True)
        assert spawn_log.isEnabledFor(logging.WARNING)
    finally:
        spawn_log.setLevel(logging.NOTSET)


def test_a_library_s_traceback_of_a_stop_is_quiet_unless_verbose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SQLAlchemy logs "Exception during reset or similar" with a traceback at ERROR when a
    SIGTERM's SystemExit lands while it resets a pooled connection; the command's own line
    says it stopped. Its other errors still show."""
    pool_log = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
    for verbose, shown in ((False, False), (True, True)):
        configure_output(verbose)
        for stop in (SystemExit(143), KeyboardInterrupt()):
            try:
                raise stop
            except BaseException:
                pool_log.error("Exception during reset or similar", exc_info=True)
        assert ("Exception during reset" in capsys.readouterr().err) is shown
    configure_output(False)
    try:
        raise OSError("connection refused")
    except OSError:
        pool_log.error("Exception during reset or similar", exc_info=True)
    assert "connection refused" in capsys.readouterr().err


@pytest.mark.slow
def test_a_default_run_prints_one_line_per_phase_and_no_noise(
    text_runs: dict[str, Finished],
) -> None:
    run = text_runs["default"]
    code, stdout, stderr, tmp_path = run.code, run.stdout, run.stderr, run.workdir
    assert code == 0, stderr
    assert stdout.strip() == str((tmp_path / "run" / "bundle").resolve())
    lines = stderr.strip().splitlines()
    for fragment in NOISE:
        assert fragment not in stderr, fragment
    assert [line.split(":")[0].split(" ")[0] for line in lines] == [
        "data",
        "data",
        "epoch",
        "export",
        "monitoring",
        "evaluation",
        "done",
    ], stderr
    assert lines[0].startswith("data: 3 classes, 24 train / 6 val / 6 test items")
    assert lines[1].startswith(f"data: encoded inputs in {tmp_path / 'cache' / 'encoded'}: ")
    assert "train split encoded once (24 items, " in lines[1]
    assert "val split encoded once (6 items, " in lines[1]
    assert lines[2].startswith("epoch 1/1: train loss ")
    assert "export: bundle 'reuters_r8_sample' version 1 in " in lines[3]


@pytest.mark.slow
def test_verbose_shows_everything_once(text_runs: dict[str, Finished]) -> None:
    code, stderr = text_runs["verbose"].code, text_runs["verbose"].stderr
    assert code == 0, stderr
    for fragment in ("GPU available", "litlogger", "TracerWarning", "Loading weights"):
        assert fragment in stderr, fragment
    repeated = {
        line: n for line, n in Counter(stderr.splitlines()).items() if n > 1 and line.strip()
    }
    assert repeated == {}


@pytest.mark.slow
def test_ctrl_c_marks_the_run_killed_and_says_how_to_resume(
    digit_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, epochs=50),
        *SMALL_NETWORK,
        "model.freeze_backbone=true",
    ]
    process = mlfactory_process(["train", "digits", *overrides, "--out", str(out)], tmp_path)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.is_file(), process.communicate()[1]
    time.sleep(1.0)  # into the next epoch
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    final = stderr.strip().splitlines()[-1]
    assert final.startswith("interrupted; MLflow run ")
    assert f"continue it with: mlfactory train digits --out {out} --resume" in final
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mlfactory").experiment_id])
    assert run.info.status == "KILLED"

    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    trained = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    resumed = mlfactory_process(
        ["train", "digits", "--out", str(out), "--resume", f"trainer.max_epochs={trained + 1}"],
        tmp_path,
    )
    stdout, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stderr
    assert stdout.strip() == str((out / "bundle").resolve())
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
