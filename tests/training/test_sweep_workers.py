"""Several workers on one study, with the real Optuna, MLflow and PostgreSQL: workers started
together on an empty database draw different values, share one MLflow run and open the storage
without tripping over each other; a worker killed outright, even while Optuna makes its trial,
has it failed by the next; a study's settings are kept without their passwords, and its
direction is its metric's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from mlfactory.errors import ConfigError
from mlfactory.training import sweep_study
from mlfactory.training.search_space import parse_search_space
from mlfactory.training.sweep import _outcome
from mlfactory.training.sweep_failures import NO_REASON
from mlfactory.training.sweep_lock import study_setup_lock
from mlfactory.training.sweep_parent import gone_store_error, parent_run
from mlfactory.training.sweep_study import check_study, claim_out, open_study
from mlfactory.training.sweep_trials import run_trials
from tests.postgres import fresh_database, postgres_url  # noqa: F401  (the fixture)

from ..conftest import SMALL_NETWORK, fast_digits_overrides, untraced_env
from .test_sweep_stops import READ_BACK, waits_with_its_trial_made

LR = FloatDistribution(1e-4, 1e-2, log=True)
SPACE = ["trainer.lr=tag(log,interval(1e-4,1e-2))"]


def together(work: Callable[[], Any], workers: int = 2) -> list[Any]:
    """`work` in `workers` threads released at the same moment; their results (or errors)."""
    barrier = threading.Barrier(workers)
    results: list[Any] = [None] * workers

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as exc:  # the test says what it was
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_workers_started_together_on_an_empty_database_draw_different_values(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    for attempt in range(3):  # a race: several tries at it
        storage = fresh_database(postgres_url, f"optuna_together_{attempt}")

        def first_draw(storage: str = storage) -> float:
            study = open_study("s", storage, "minimize", None, seed=42)
            return float(study.ask({"lr": LR}).params["lr"])

        draws = together(first_draw)
        assert all(isinstance(draw, float) for draw in draws), draws  # both opened it
        assert draws[0] != draws[1]
    # One worker draws what it drew before with the same seed: trial N from seed + N.
    runs = []
    for again in range(2):
        study = open_study("s", f"sqlite:///{tmp_path / f'{again}.db'}", "minimize", None, 7)
        runs.append([study.ask({"lr": LR}).params["lr"] for _ in range(3)])
    assert runs[0] == runs[1] and len(set(runs[0])) == 3


def test_workers_started_together_share_one_mlflow_run(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    storage = fresh_database(postgres_url, "optuna_parent")
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.MlflowClient(store).search_experiments()  # the store's tables, made once
    open_study("s", storage, "minimize", None, 1)  # and the storage's: both set up at once
    space = parse_search_space(SPACE)
    config = type("Tracking", (), {"experiment": "mlfactory", "artifact_location": None})()

    def set_up() -> tuple[str, str]:
        with study_setup_lock(storage, "s"):
            study = open_study("s", storage, "minimize", None, 1)
            check_study(study, "val/loss", "minimize", space)
            claim_out(study, storage, tmp_path / "runs")
            client = mlflow.MlflowClient(store)
            parent = parent_run(study, client, config, space, "val/loss", "minimize")
            return parent, study.user_attrs["sweep_id"]

    (first, second) = together(set_up)
    assert first == second, (first, second)
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("mlfactory")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_a_killed_worker_s_trial_is_failed_by_the_next_worker(tmp_path: Path) -> None:
    """SIGKILL leaves no word: the next worker sees the trial's heartbeats stopped."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    worker = (
        "import sys, time; from mlfactory.training import sweep_study as s\n"
        "s.HEARTBEAT_INTERVAL_S, s.HEARTBEAT_GRACE_S = 1, 2\n"
        "study = s.open_study('s', sys.argv[1], 'minimize', None, 1)\n"
        "study.optimize(lambda trial: time.sleep(600) or 0.0, n_trials=1)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", worker, storage], env=untraced_env())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            summaries = optuna.get_all_study_summaries(storage)
            if summaries and summaries[0].n_trials:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # a heartbeat or two
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    time.sleep(3)  # past the grace period
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_study, "HEARTBEAT_INTERVAL_S", 1)
        patch.setattr(sweep_study, "HEARTBEAT_GRACE_S", 2)
        study = open_study("s", storage, "minimize", None, 1)
        study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1e-2), n_trials=1)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]
    assert _outcome(study.trials[0]).error == NO_REASON


def test_a_worker_killed_while_optuna_makes_its_trial_has_it_failed_by_the_next(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """SIGKILL after `study.ask` has put the trial in the storage and before the worker's
    heartbeat thread starts (Optuna samples the trial's values, then reads it back: held there
    by a real lock on `READ_BACK`): the trial had its first heartbeat as it was made, so the
    next worker sees the heartbeats stopped and fails it."""
    from sqlalchemy import create_engine, text

    storage = fresh_database(postgres_url, "optuna_killed_in_ask")
    optuna.storages.RDBStorage(storage).remove_session()  # Optuna's tables, to lock one
    worker = (
        "import sys; from mlfactory.training import sweep_study as s, sweep_trials as t\n"
        "s.HEARTBEAT_INTERVAL_S, s.HEARTBEAT_GRACE_S = 1, 2\n"
        "study = s.open_study('s', sys.argv[1], 'minimize', None, 1)\n"
        "t.run_trials(study, lambda trial: 0.0, 1, None, (), [])\n"
    )
    engine = create_engine(storage)
    with engine.connect() as holder, engine.connect() as watcher:
        holder.execute(text(f"LOCK TABLE {READ_BACK} IN ACCESS EXCLUSIVE MODE"))
        process = subprocess.Popen([sys.executable, "-c", worker, storage], env=untraced_env())

        made = waits_with_its_trial_made(watcher, process, timeout_s=120)
        process.kill()
        process.wait(timeout=30)
        holder.rollback()
    engine.dispose()
    assert made, "the worker never waited with its trial made"
    time.sleep(3)  # past the grace period
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_study, "HEARTBEAT_INTERVAL_S", 1)
        patch.setattr(sweep_study, "HEARTBEAT_GRACE_S", 2)
        study = open_study("s", storage, "minimize", None, 1)
        run_trials(study, lambda trial: trial.suggest_float("lr", 1e-4, 1e-2), 1, None, (), [])
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_study_of_the_other_direction_is_refused(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = parse_search_space(SPACE)
    check_study(open_study("s", storage, "maximize", None, 1), "val/acc", "maximize", space)
    study = open_study("s", storage, "minimize", None, 1)  # the study there maximizes
    with pytest.raises(ConfigError) as refused:
        check_study(study, "val/acc", "minimize", space)
    assert "created to maximize" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_study_keeps_its_settings_without_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with_password = "tracking.tracking_uri=postgresql+psycopg://mlf:s3cret@db/mlflow"
    space = parse_search_space([with_password, *SPACE])
    study = open_study("s", storage, "minimize", None, 1)
    check_study(study, "val/loss", "minimize", space)
    assert "s3cret" not in json.dumps(study.user_attrs)
    assert study.user_attrs["fixed"]["tracking.tracking_uri"] == (
        "postgresql+psycopg://mlf@db/mlflow"
    )
    # The password moved to PGPASSWORD: the same settings.
    moved = "tracking.tracking_uri=postgresql+psycopg://mlf@db/mlflow"
    check_study(study, "val/loss", "minimize", parse_search_space([moved, *SPACE]))
    # A study stored before passwords were left out: compared without them too, and the
    # refusal of another store never shows one.
    study.set_user_attr("fixed", {"tracking.tracking_uri": with_password.partition("=")[2]})
    check_study(study, "val/loss", "minimize", parse_search_space([moved, *SPACE]))
    other = "tracking.tracking_uri=postgresql+psycopg://mlf:other@db2/mlflow"
    with pytest.raises(ConfigError) as refused:
        check_study(study, "val/loss", "minimize", parse_search_space([other, *SPACE]))
    assert "was started with other settings" in str(refused.value)
    assert "s3cret" not in str(refused.value) and "other@" not in str(refused.value)
    # The sweep's MLflow run and the trial folder's marker: no password either.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    where = {"experiment": "mlfactory", "artifact_location": str(tmp_path / "artifacts")}
    config = type("Tracking", (), where)()
    twice = parse_search_space(
        [with_password, "trainer.max_epochs=2", "trainer.max_epochs=5", *SPACE]
    )
    parent = parent_run(study, client, config, twice, "val/loss", "minimize")
    params = client.get_run(parent).data.params
    assert params["fixed.tracking.tracking_uri"] == "postgresql+psycopg://mlf@db/mlflow"
    assert params["fixed.trainer.max_epochs"] == "5"  # given twice: the last, as a recipe takes
    claim_out(study, "postgresql+psycopg://mlf@db/optuna?password=s3cret", tmp_path / "runs")
    marker = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    assert marker["storage"] == "postgresql+psycopg://mlf@db/optuna?password=***"


def test_a_store_that_went_away_is_named_in_one_line(tmp_path: Path) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from mlfactory.serving.process import free_port

    gone = f"postgresql+psycopg://mlf:s3cret@127.0.0.1:{free_port()}/optuna"
    try:
        create_engine(gone).connect()
    except OperationalError as exc:
        error = gone_store_error(exc, gone, f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert error is not None
    message = str(error)
    assert message.startswith("the Optuna storage --storage postgresql+psycopg://mlf:***@127.0.0.1")
    assert "stopped answering during the sweep" in message
    assert "s3cret" not in message and "\n" not in message
    answering = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert gone_store_error(ValueError("x"), answering, answering) is None


def test_workers_started_together_on_empty_databases(
    digit_folder: Path,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """Two workers started at the same moment on an empty Optuna storage and an empty MLflow
    store: both create what they need without tripping over the other, draw different values,
    and nest their trials under one sweep run."""
    storage = fresh_database(postgres_url, "optuna_together")
    store = fresh_database(postgres_url, "mlflow_together")
    one_epoch = fast_digits_overrides(digit_folder, tmp_path, epochs=1)
    overrides = [o for o in one_epoch if not o.startswith("tracking.tracking_uri=")]
    overrides += [*SMALL_NETWORK, f"tracking.tracking_uri={store}"]
    command = [
        sys.executable, "-m", "mlfactory.cli", "sweep", "digits", *overrides,
        "trainer.lr=tag(log,interval(1e-4,1e-2))",
        "--trials", "1", "--no-prune", "--storage", storage, "--out", str(tmp_path / "runs"),
    ]  # fmt: skip
    env = untraced_env()
    workers = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [worker.communicate(timeout=600)[1] for worker in workers]
    for worker, err in zip(workers, errors, strict=True):
        assert worker.returncode == 0, err
        assert "1 run by this worker" in " ".join(err.split())
        assert "something else" not in err
    study = optuna.load_study(study_name="digits-sweep", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert study.trials[0].params["trainer.lr"] != study.trials[1].params["trainer.lr"]
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("mlfactory")
    assert experiment is not None
    sweeps = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`mlfactory.sweep` = 'digits-sweep'"
    )
    parents = {r.info.run_id for r in sweeps if "mlflow.parentRunId" not in r.data.tags}
    assert parents == {study.user_attrs["mlflow_parent_run_id"]}
