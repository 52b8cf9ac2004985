"""A sweep's trial that does not finish, with the real Optuna and MLflow: an unexpected error is
kept as one line (passwords masked) for the table, and a stopped trial keeps its MLflow run."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest

from mlfactory import tracking
from mlfactory.errors import Interrupted, Terminated
from mlfactory.training.sweep import _outcome
from mlfactory.training.sweep_failures import record_failure


def _study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_an_unexpected_error_is_the_trial_s_reason_in_one_line(tmp_path: Path) -> None:
    study = _study(tmp_path)
    folder = tmp_path / "trial-0"

    def objective(trial: optuna.Trial) -> float:
        try:
            open("postgresql+psycopg://mlf:s3cret@db/x?token=abc\nmore")  # noqa: SIM115
        except OSError as exc:
            raise record_failure(trial, exc, folder, client=None) from None
        return 0.0

    with pytest.raises(FileNotFoundError):
        study.optimize(objective, n_trials=1)
    outcome = _outcome(study.trials[0])
    assert outcome.state == "FAIL"
    assert outcome.error is not None
    assert outcome.error.startswith("FileNotFoundError: [Errno 2] No such file or directory: ")
    assert "s3cret" not in outcome.error and "abc" not in outcome.error
    assert "mlf@db/x?token=***" in outcome.error and "\n" not in outcome.error


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_trial_keeps_its_mlflow_run_killed(stop: str, tmp_path: Path) -> None:
    """The table's MLflow-run cell of an interrupted or terminated trial names its run."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    folder = tmp_path / "trial-0"
    folder.mkdir()
    tracking.save_run_state(folder, {"mlflow_run_id": run_id})
    study = _study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        try:
            if stop == "sigterm":
                raise SystemExit(143)  # as termination.exit_on_sigterm raises it
            raise Interrupted("interrupted; MLflow run marked KILLED")
        except BaseException as exc:
            raise record_failure(trial, exc, folder, client) from None

    with pytest.raises(Terminated if stop == "sigterm" else Interrupted):
        study.optimize(objective, n_trials=1)
    outcome = _outcome(study.trials[0])
    assert outcome.state == "FAIL"  # not left RUNNING, as a SystemExit through Optuna leaves it
    assert outcome.run_id == run_id
    assert outcome.error == (
        "terminated (SIGTERM)" if stop == "sigterm" else "interrupted (Ctrl-C)"
    )
    assert client.get_run(run_id).info.status == "KILLED"
