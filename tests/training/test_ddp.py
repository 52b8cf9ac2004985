"""Distributed training: `mlfactory train` under Lightning DDP (2 CPU processes, gloo).

Lightning's DDP launcher starts the second rank by running the same command line again, so this
runs the real CLI as a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow

from mlfactory.bundle import load_bundle
from tests.conftest import SMALL_NETWORK, fast_digits_overrides

MLFACTORY = str(Path(sys.executable).parent / "mlfactory")


def test_ddp_run_has_one_owner_one_mlflow_run_and_one_bundle(
    digit_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = [*fast_digits_overrides(digit_folder, tmp_path, epochs=2), *SMALL_NETWORK]
    overrides += ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on two cores
    done = subprocess.run(
        [MLFACTORY, "train", "digits", "--out", str(out), *overrides, "-v"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr  # really two processes (Lightning's line, shown by -v)

    # Only rank 0 reports; its report names the run and the bundle.
    assert done.stdout.strip().splitlines() == [str((out / "bundle").resolve())]
    lines = done.stderr.splitlines()
    for phase in ("export: ", "evaluation: test accuracy", "done in ", "note: "):
        assert sum(line.startswith(phase) for line in lines) == 1, phase
    # The dataset's summary, then the train and validation splits encoded once (by one process;
    # the other rank reads the same rows).
    data_lines = [line for line in lines if line.startswith("data: ")]
    assert len(data_lines) == 2, data_lines
    assert "train split encoded once" in data_lines[1], data_lines
    assert "val split encoded once" in data_lines[1], data_lines

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [run.info.status for run in runs] == ["FINISHED"]
    run_id = runs[0].info.run_id
    assert run_id in done.stderr
    # --resume needs the owner's run id, not a non-zero rank's empty one.
    assert json.loads((out / "run.json").read_text())["mlflow_run_id"] == run_id
    bundle = load_bundle(out / "bundle")
    assert bundle.meta.mlflow_run_id == run_id
    assert bundle.meta.metrics["test"]["split_size"] > 0
