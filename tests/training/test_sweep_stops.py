"""A sweep stopped from outside, with the real Optuna, MLflow and PostgreSQL: SIGTERM or Ctrl-C
while Optuna makes a trial, SIGTERM before or during a trial's fit, and a tracking store that
goes away mid-sweep, each end the sweep in one line and never leave its trial RUNNING."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from sqlalchemy import Connection, text

from tests.postgres import fresh_database, postgres_url  # noqa: F401  (the fixture)

from ..conftest import SMALL_NETWORK, fast_digits_overrides
from .test_sweep import LR


@pytest.mark.slow
def test_sigterm_fails_the_trial_and_ends_the_sweep(digit_folder: Path, tmp_path: Path) -> None:
    """SIGTERM (a `kill`, a stopped container), before the fit or during it: the trial fails
    with the reason said, its MLflow run and the sweep's are KILLED, one line, exit code 143."""
    from tests.test_output import mlfactory_process

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, epochs=50),
        *SMALL_NETWORK,
        "model.freeze_backbone=true",
    ]
    args = ["sweep", "digits", *overrides, LR, "--trials", "1", "--no-prune"]
    args += ["--storage", storage, "--out", "runs"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")

    def running(trials: int) -> bool:  # the trial's training has started (its data not ready)
        if not (tmp_path / "runs" / f"trial-{trials - 1}").is_dir():
            return False  # Optuna may still be making the trial: the next test stops that
        try:  # read only: asking Optuna would create the tables the worker is creating
            with sqlite3.connect(f"file:{tmp_path / 'optuna.db'}?mode=ro", uri=True) as db:
                return bool(db.execute("SELECT count(*) FROM trials").fetchone()[0] == trials)
        except sqlite3.Error:
            return False

    def fitting(trials: int) -> bool:
        return (tmp_path / "runs" / f"trial-{trials - 1}" / "checkpoints" / "last.ckpt").is_file()

    for trials, started in ((1, running), (2, fitting)):
        process = mlfactory_process(args, tmp_path)
        deadline = time.monotonic() + 600
        while not started(trials) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started(trials), process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 143, stderr
        assert "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1] == (
            "terminated (SIGTERM); the study 'digits-sweep' keeps its 0 finished trial(s): run "
            "the same command to add more"
        )
        study = optuna.load_study(study_name="digits-sweep", storage=storage)
        trial = study.trials[-1]
        assert trial.state == optuna.trial.TrialState.FAIL
        assert trial.user_attrs["error"] == "terminated (SIGTERM)"
        assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"
        if trial.user_attrs.get("mlflow_run_id") or trials == 2:
            assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"


# The table Optuna reads a trial's user attributes from: a new trial is read back from it
# (`study.ask`, after the trial is in the storage), and its creation does not touch it.
READ_BACK = "trial_user_attributes"


def waits_with_its_trial_made(
    watcher: Connection, process: subprocess.Popen[Any], timeout_s: float
) -> bool:
    """Wait until the worker `process` waits for the lock on `READ_BACK` with its one trial in
    the storage, RUNNING (True), or it exits, or `timeout_s` pass (False)."""

    def waiting() -> bool:
        waits = f"SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '{READ_BACK}'"
        blocked = watcher.execute(text(f"{waits}::regclass")).scalar()
        states = watcher.execute(text("SELECT state FROM trials")).scalars().all()
        watcher.rollback()
        return bool(blocked) and states == ["RUNNING"]

    deadline = time.monotonic() + timeout_s
    while not waiting() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return waiting()


@pytest.mark.parametrize(
    ("signum", "code", "reason", "said"),
    [
        (signal.SIGTERM, 143, "terminated (SIGTERM)", "terminated (SIGTERM)"),
        (signal.SIGINT, 130, "interrupted (Ctrl-C)", "interrupted"),
    ],
)
def test_a_signal_while_optuna_makes_the_trial_fails_it(
    signum: int,
    code: int,
    reason: str,
    said: str,
    digit_folder: Path,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """SIGTERM or Ctrl-C in the moment the trial is in the storage but Optuna has not handed it
    over yet (`study.ask`): the trial is failed with the reason, not left RUNNING for good
    (it has no heartbeat for the heartbeat check to see stop). The worker is held in that
    moment by a real lock, no hook: the test holds `READ_BACK` locked, and sends the signal
    once the worker waits for it with its trial made."""
    from sqlalchemy import create_engine

    from tests.test_output import mlfactory_process

    storage = fresh_database(postgres_url, f"optuna_ask_{signum}")
    optuna.storages.RDBStorage(storage).remove_session()  # Optuna's tables, to lock one
    engine = create_engine(storage)
    args = ["sweep", "digits", *fast_digits_overrides(digit_folder, tmp_path), *SMALL_NETWORK]
    args += [LR, "--trials", "1", "--no-prune", "--storage", storage, "--out", "runs"]
    with engine.connect() as holder, engine.connect() as watcher:
        holder.execute(text(f"LOCK TABLE {READ_BACK} IN ACCESS EXCLUSIVE MODE"))
        process = mlfactory_process(args, tmp_path)

        if not waits_with_its_trial_made(watcher, process, timeout_s=300):
            process.kill()
            pytest.fail(f"the worker never waited with its trial made: {process.communicate()}")
        process.send_signal(signum)
        time.sleep(1)  # it lands while the worker waits (psycopg looks every 0.1 s)
        holder.rollback()  # the lock goes: Optuna hands the trial over
    engine.dispose()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"{said}; the study 'digits-sweep' keeps its 0 finished trial(s): run the same command "
        "to add more"
    )
    (trial,) = optuna.load_study(study_name="digits-sweep", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["error"] == reason


@pytest.mark.slow
def test_a_tracking_store_that_goes_away_mid_sweep_is_one_line(
    digit_folder: Path,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """The MLflow database stops taking connections while a trial trains: one `error:` line
    naming the store (the sweep's clean-up, which fails too, hides nothing), exit code 2."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from tests.test_output import mlfactory_process

    store = fresh_database(postgres_url, "mlflow_gone")
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    long_run = fast_digits_overrides(digit_folder, tmp_path, epochs=50)
    overrides = [o for o in long_run if not o.startswith("tracking.tracking_uri=")]
    overrides += [*SMALL_NETWORK, "model.freeze_backbone=true", f"tracking.tracking_uri={store}"]
    args = ["sweep", "digits", *overrides, LR, "--trials", "2", "--no-prune"]
    args += ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--out", "runs"]
    process = mlfactory_process(args, tmp_path)
    last = tmp_path / "runs" / "trial-0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.is_file(), process.communicate()[1]
    with admin.connect() as connection:
        connection.execute(text("ALTER DATABASE mlflow_gone ALLOW_CONNECTIONS false"))
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'mlflow_gone'"
            )
        )
    admin.dispose()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    final = stderr.strip().splitlines()[-1]
    assert final.startswith(f"error: the MLflow store {make_url(store)} stopped answering"), stderr
