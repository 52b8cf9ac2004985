"""The sweep's table: readable in an 80-column terminal, with every MLflow run id whole."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from rich.console import Console

from mlfactory.sweep_command import register_hint, trials_table
from mlfactory.training.sweep import SweepResult, TrialOutcome

RUNS = [f"{n:x}" * 32 for n in range(10, 14)]


def _result() -> SweepResult:
    result = SweepResult(
        "digits-lr",
        "sqlite:////home/me/runs/optuna.db",
        "val_accuracy",
        "maximize",
        "p" * 32,
        tracking_uri="sqlite:///mlruns.db",
        ran=4,
    )
    params = [(0.00123, 64, 0.2), (0.0523, 32, 0.1), (0.1, 256, 0.4), (0.01, 16, 0.3)]
    states = [("PRUNED", 0.5), ("COMPLETE", 0.9234), ("FAIL", None), ("FAIL", None)]
    errors = [None, None, "data source /data/x yields only 1 class ('7')", "interrupted (Ctrl-C)"]
    for number, ((lr, batch, dropout), (state, value), error) in enumerate(
        zip(params, states, errors, strict=True)
    ):
        keys = {"trainer.lr": lr, "data.batch_size": batch, "model.head.dropout": dropout}
        run = RUNS[number] if number < 3 else None
        result.trials.append(TrialOutcome(number, state, keys, value, run, error=error))
    return result


def _printed(width: int, result: SweepResult | None = None) -> list[str]:
    console = Console(width=width, record=True)
    console.print(trials_table(result or _result(), width))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_an_80_column_table_lists_the_run_ids_whole_under_it() -> None:
    lines = _printed(80)
    assert max(len(line.rstrip()) for line in lines) <= 80
    header = next(line for line in lines if "state" in line).split()
    assert header == ["trial", "state", "batch_size", "dropout", "lr", "val_accuracy"]
    rows = [line.split() for line in lines if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])]
    assert rows == [
        ["1", "complete", "32", "0.1", "0.0523", "0.9234"],
        ["0", "pruned", "64", "0.2", "0.00123", "0.5000"],
        ["2", "fail", "256", "0.4", "0.1"],
        ["3", "fail", "16", "0.3", "0.01"],
    ]
    assert "trial 2: data source /data/x yields only 1 class ('7')" in lines
    assert "trial 3: interrupted (Ctrl-C)" in lines
    for number in range(3):
        assert f"trial {number}: MLflow run {RUNS[number]}" in lines


def test_a_wide_terminal_has_the_run_ids_in_a_column() -> None:
    lines = _printed(160)
    header = next(line for line in lines if "state" in line).split()
    assert header[-2:] == ["MLflow", "run"]
    best = next(line for line in lines if line.split()[:2] == ["1", "complete"])
    assert best.split() == ["1", "complete", "32", "0.1", "0.0523", "0.9234", RUNS[1]]
    assert not any(line.startswith("trial 0: MLflow run") for line in lines)


def test_a_key_keeps_as_much_of_its_path_as_tells_it_apart() -> None:
    result = _result()
    result.trials[0].params["optimizer.lr"] = 0.1
    lines = [line.split() for line in _printed(200, result)]
    header = next(line for line in lines if "state" in line)
    assert header[2:5] == ["batch_size", "dropout", "optimizer.lr"]
    assert header[5] == "trainer.lr"


def test_the_title_counts_the_trials_this_worker_ran() -> None:
    result = _result()
    result.ran = 1  # another worker ran the other three
    title = " ".join(" ".join(_printed(200, result)).split())
    assert "1 complete, 2 fail, 1 pruned; 1 run by this worker" in title


@pytest.mark.parametrize(
    "store",
    ["sqlite:///mlruns.db", "postgresql+psycopg://mlf:s3cret@db.example/mlflow?sslmode=require"],
)
def test_the_register_hint_names_a_store_that_is_not_the_default(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as printed (in a shell), the hint's `mlfactory register` looks the run up in the
    sweep's store: MLFLOW_TRACKING_URI is set to it, without the password."""
    from mlfactory.tracking import without_secrets

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = _result()
    result.tracking_uri = without_secrets(store)
    result.best = TrialOutcome(1, "COMPLETE", {}, 0.9, RUNS[1], bundle=str(tmp_path / "b dir"))
    hint = register_hint(result)
    assert "s3cret" not in hint
    # As a shell reads it: the environment it sets, then the command.
    words = shlex.split(hint)
    at = words.index("mlfactory")
    assert words[at:] == ["mlfactory", "register", str(tmp_path / "b dir")]
    if store.startswith("sqlite"):  # the default store: nothing to set
        assert words[:at] == []
    else:
        expected = "postgresql+psycopg://mlf@db.example/mlflow?sslmode=require"
        assert words[:at] == [f"MLFLOW_TRACKING_URI={expected}"]
