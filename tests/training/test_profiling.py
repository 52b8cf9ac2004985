"""`trainer.profiler`: Lightning's profilers report where a fit's time went, in the run folder
and in the MLflow run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pytest

from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.output import PHASE_LOGGER
from mlfactory.training.profiling import make_profiler
from mlfactory.training.run_folder import PROFILER_DIR
from mlfactory.training.train import train

from ..conftest import SMALL_NETWORK, fast_digits_overrides

# The small network, one epoch of 6 training batches (the PyTorch profiler's schedule records
# steps 3 to 5) and 2 validation batches.
SMALL = [
    *SMALL_NETWORK,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
]


def test_a_profiler_that_does_not_exist_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.profiler"):
        load_recipe("digits", ["trainer.profiler=cprofile"])


def _profiled_run(
    digit_folder: Path, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> tuple[Path, list[str]]:
    overrides = [*fast_digits_overrides(digit_folder, tmp_path), *SMALL, f"trainer.profiler={kind}"]
    with caplog.at_level(logging.INFO, logger=PHASE_LOGGER):
        result = train(load_recipe("digits", overrides), tmp_path / "run", progress=False)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    logged = [a.path for a in client.list_artifacts(result.mlflow_run_id, PROFILER_DIR)]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("profiler:")]
    assert len(lines) == 1 and f"trainer.profiler={kind}" in lines[0]
    return result.out_dir / PROFILER_DIR, logged


def test_the_simple_profiler_times_each_training_hook(
    digit_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, logged = _profiled_run(digit_folder, tmp_path, "simple", caplog)
    report = (folder / "fit-profile.txt").read_text()
    assert logged == [f"{PROFILER_DIR}/fit-profile.txt"]
    # Its table: action | mean duration (s) | number of calls | total time (s) | percentage.
    rows = {}
    for line in report.splitlines():
        fields = [field.strip() for field in line.split("|")[1:-1]]
        if len(fields) == 5 and fields[2].isdigit():
            rows[fields[0]] = (fields[1], int(fields[2]), float(fields[3]))
    assert rows["[Strategy]SingleDeviceStrategy.training_step"][1] == 6
    assert rows["[Strategy]SingleDeviceStrategy.backward"][1] == 6
    assert rows["[_TrainingEpochLoop].train_dataloader_next"][1] >= 6
    # 2 validation batches, and the 2 of Lightning's sanity check before training.
    assert rows["[Strategy]SingleDeviceStrategy.validation_step"][1] == 4
    mean, calls, total = rows["run_training_batch"]
    assert total == pytest.approx(float(mean) * calls, rel=1e-3) and 0 < total < rows["Total"][2]


def test_the_pytorch_profiler_records_the_operators_of_training_steps_3_to_5(
    digit_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, logged = _profiled_run(digit_folder, tmp_path, "pytorch", caplog)
    assert sorted(p.name for p in folder.iterdir()) == [
        "training-operators.txt",
        "training-steps.pt.trace.json",
    ]
    assert sorted(logged) == [f"{PROFILER_DIR}/{p.name}" for p in sorted(folder.iterdir())]
    table = (folder / "training-operators.txt").read_text()
    assert table.startswith("torch.profiler: training steps 3 to 5 of the fit")
    # The network's operators forward and backward, and the optimizer's, 3 steps of each.
    calls = {
        fields[0]: int(fields[-1])
        for fields in (line.split() for line in table.splitlines())
        if len(fields) == 7 and fields[-1].isdigit()
    }
    assert calls["Optimizer.step#AdamW.step"] == 3
    assert calls["aten::convolution_backward"] % 3 == 0 < calls["aten::convolution_backward"]
    events = json.loads((folder / "training-steps.pt.trace.json").read_text())["traceEvents"]
    steps = [e for e in events if e.get("name", "").startswith("Optimizer.step#AdamW")]
    assert len(steps) == 3


def test_a_fit_without_the_profiler_removes_an_earlier_fits_reports(tmp_path: Path) -> None:
    (tmp_path / PROFILER_DIR).mkdir()
    (tmp_path / PROFILER_DIR / "fit-profile.txt").write_text("an earlier fit's report")
    assert make_profiler(None, tmp_path) is None
    assert not (tmp_path / PROFILER_DIR).exists()
