"""`mlfactory sweep` on real digits with the real Optuna and MLflow: trials, their runs nested
under the sweep's run, the value each is judged by, pruning, and workers sharing a study on
PostgreSQL."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.cli import app
from mlfactory.serving.process import free_port
from mlfactory.training.search_space import parse_search_space
from mlfactory.training.sweep import run_sweep, trial_value
from tests.postgres import fresh_database, postgres_url  # noqa: F401  (the fixture)

from ..conftest import SMALL_NETWORK, fast_digits_overrides, untraced_env
from ..test_cli import assert_one_line_error
from .test_tracking import UNUSABLE_STORES, tiny_run

runner = CliRunner()
LR = "trainer.lr=choice(0.0003,0.003)"


def sweep_overrides(digit_folder: Path, workdir: Path, store: str | None = None) -> list[str]:
    overrides = [*fast_digits_overrides(digit_folder, workdir, epochs=2), *SMALL_NETWORK]
    if store is not None:
        overrides = [o for o in overrides if not o.startswith("tracking.tracking_uri=")]
        overrides.append(f"tracking.tracking_uri={store}")
    return overrides


def test_a_sweep_trains_each_trial_and_names_the_best(
    digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # a path, as the help has it ("a SQLite file"), is that file
    args = [
        "sweep",
        "digits",
        *sweep_overrides(digit_folder, tmp_path),
        LR,
        "--storage",
        "optuna.db",
    ]
    result = runner.invoke(app, [*args, "--trials", "2", "--no-prune"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="digits-sweep", storage=storage)
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    parent = study.user_attrs["mlflow_parent_run_id"]
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        # The trial trained what was sampled, in a run of its own under the sweep's run.
        assert float(run.data.params["trainer.lr"]) == trial.params["trainer.lr"]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["mlfactory.sweep_trial"] == str(trial.number)
        assert run.data.params["trainer.devices"] == "1"  # "auto": one device per trial
        # Its value is the lowest validation loss: the epoch its bundle holds.
        history = client.get_metric_history(run.info.run_id, "val/loss")
        assert len(history) == 2
        assert trial.value == min(m.value for m in history)
        bundle = load_bundle(trial.user_attrs["bundle"])
        assert bundle.meta.mlflow_run_id == run.info.run_id
        folder = tmp_path / "runs" / "digits-sweep" / f"trial-{trial.number}"
        assert Path(trial.user_attrs["bundle"]) == folder / "bundle"
    best = min(trials, key=lambda t: t.value)
    assert result.stdout.strip().splitlines()[-1] == best.user_attrs["bundle"]
    assert f"best: trial {best.number}, val/loss {best.value:.4f}" in result.stderr
    # Both trials read the same data: its lines once, each trial's own lines twice.
    lines = result.stderr.splitlines()
    for said_once in ("data: 10 classes, ", "monitoring: profile of "):
        assert sum(line.startswith(said_once) for line in lines) == 1, result.stderr
    for said_twice in ("export: bundle 'digits' version ", "evaluation: test accuracy "):
        assert sum(line.startswith(said_twice) for line in lines) == 2, result.stderr
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.params["space.trainer.lr"] == "choice(0.0003,0.003)"
    assert parent_run.data.tags["best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent_run.data.metrics["best_value"] == best.value

    # Again: one more trial in the same study, under the same MLflow run.
    result = runner.invoke(app, [*args, "--trials", "1", "--no-prune"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="digits-sweep", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert study.user_attrs["mlflow_parent_run_id"] == parent
    assert "3 complete; 1 run by this worker" in result.stderr

    # Judged by another metric, the same study would mix two objectives: refused.
    refused = runner.invoke(app, [*args, "--trials", "1", "--metric", "val/acc"])
    assert_one_line_error(refused, "judges trials by val/loss, not val/acc")


def test_val_acc_is_read_at_the_epoch_of_the_lowest_loss(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.create_run(client.create_experiment("judge")).info.run_id
    for step, (loss, acc) in enumerate([(1.0, 0.5), (0.7, 0.6), (0.8, 0.9)]):
        client.log_metric(run, "val/loss", loss, step=step * 10)
        client.log_metric(run, "val/acc", acc, step=step * 10)
    assert trial_value(client, run, "val/loss") == 0.7
    assert trial_value(client, run, "val/acc") == 0.6  # not 0.9: that epoch is not the bundle's


def test_a_pruned_trial_stops_early_and_says_so(digit_folder: Path, tmp_path: Path) -> None:
    space = parse_search_space([*sweep_overrides(digit_folder, tmp_path), LR])
    # Real Optuna pruning, with a threshold every real loss is above: pruned after epoch 1.
    result = run_sweep(
        "digits",
        space,
        trials=1,
        out_dir=tmp_path / "runs",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        pruner=optuna.pruners.ThresholdPruner(upper=0.0),
    )
    (trial,) = result.trials
    assert trial.state == "PRUNED"
    assert result.best is None
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").get_run(trial.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlfactory.sweep_state"] == "PRUNED"
    assert (
        len(
            mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").get_metric_history(
                trial.run_id, "val/loss"
            )
        )
        == 1
    )  # stopped after its first epoch of two


def test_mistakes_are_one_line(digit_folder: Path, tmp_path: Path) -> None:
    base = ["sweep", "digits", *sweep_overrides(digit_folder, tmp_path)]
    storage = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    cases = {
        ("trainer.max_epochs=3",): "nothing to sweep",
        ("trainer.nope=choice(1,2)",): "trainer.nope: unknown key",
        (LR, "--metric", "val/auc"): "--metric val/auc: use one of val/loss",
        (LR, "data.val_fraction=0"): "set data.val_fraction above 0",
        (LR, "trainer.devices=2"): "a sweep trains each trial on one device",
        (LR, "trainer.strategy=ddp"): "start one worker per device",
        (LR, "trainer.num_nodes=2"): "trainer.num_nodes=2",
        (LR, "trainer.accelerator=tpu"): "trainer.accelerator=tpu: torch finds no TPU",
        # every value of a choice is checked before the study, not only the first
        (LR, "trainer.batch_size=choice(8,0)"): "trainer.batch_size",
        (LR, "model.backbone=choice(test_efficientnet,resnet1800)"): (
            "model.backbone: 'resnet1800' is not a timm model; did you mean resnet18"
        ),
        (LR, "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/x"): (
            "--storage postgresql+psycopg://u:***@127.0.0.1:1/x cannot be opened"
        ),
        (LR, "--storage", "postgresql://u:secret@127.0.0.1:port/x"): (
            "--storage postgresql://u:***@127.0.0.1:port/x cannot be opened: invalid literal"
        ),
        (LR, "--storage", "postgresql+psycopg://u@127.0.0.1:1/x?password=secret"): (
            "--storage postgresql+psycopg://u@127.0.0.1:1/x?password=*** cannot be opened"
        ),
    }
    shop, not_a_database = tmp_path / "shop.db", tmp_path / "notes.db"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE orders (id INTEGER)")
    not_a_database.write_text("not a database")
    before = shop.read_bytes()
    cases |= {  # a plain path is the SQLite file; never one of another program's
        (LR, "--storage", str(shop)): (
            f"--storage sqlite:///{shop} cannot be used: {shop} is a SQLite database of "
            "something else (tables orders), not an Optuna storage; it was left unchanged"
        ),
        (LR, "--storage", f"sqlite:///{not_a_database}"): "cannot be read as a SQLite database",
    }
    for extra, message in cases.items():
        result = runner.invoke(app, [*base, *storage, *extra])
        assert_one_line_error(result, message)
        assert "secret" not in result.output
    assert shop.read_bytes() == before


@pytest.mark.parametrize("uri", ["garbage", "http://127.0.0.1:{closed}"])
def test_a_tracking_store_that_cannot_be_used_is_one_line_before_the_study(
    uri: str, tmp_path: Path
) -> None:
    """MLflow's file store (refused by MLflow) and a server that does not answer: one line
    naming tracking.tracking_uri, before any trial prepares data or trains."""
    port = free_port()
    uri, message = uri.format(closed=port), UNUSABLE_STORES[uri].format(closed=port)
    args = ["sweep", "digits", *tiny_run(tmp_path), f"tracking.tracking_uri={uri}", LR]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = runner.invoke(app, [*args, "--storage", storage, "--out", str(tmp_path / "t")])
    assert_one_line_error(result, message)
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "t").exists()
    assert not (tmp_path / "optuna.db").exists()  # no empty study either


def test_workers_share_a_study_on_postgresql(
    digit_folder: Path,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    """Two processes, as two machines would, run trials of one study stored in PostgreSQL,
    tracked to one MLflow store on the same server."""
    storage = fresh_database(postgres_url, "optuna_sweep")
    store = fresh_database(postgres_url, "mlflow_sweep")
    command = [
        sys.executable, "-m", "mlfactory.cli", "sweep", "digits",
        *sweep_overrides(digit_folder, tmp_path, store), LR,
        "--trials", "1", "--no-prune", "--storage", storage, "--out", str(tmp_path / "runs"),
    ]  # fmt: skip
    env = untraced_env()
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        summaries = optuna.get_all_study_summaries(storage)
        if summaries and summaries[0].n_trials:
            break
        time.sleep(0.5)
    second = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err.decode()
    assert second.returncode == 0, second.stderr
    study = optuna.load_study(study_name="digits-sweep", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    client = mlflow.MlflowClient(store)
    parents = {
        client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
        for t in study.trials
    }
    assert parents == {study.user_attrs["mlflow_parent_run_id"]}
    folders = {Path(t.user_attrs["bundle"]).parent.name for t in study.trials}
    assert folders == {"trial-0", "trial-1"}


def test_a_trial_the_recipe_refuses_fails_and_the_sweep_goes_on(
    digit_folder: Path, tmp_path: Path
) -> None:
    # Each value of each choice passes the start check, but pruning a frozen backbone is refused
    # when a trial draws both; the recipe's seed makes the draws the same on every run.
    choices = ["model.freeze_backbone=choice(false,true)", "model.prune_channels=choice(0,0.25)"]
    space = parse_search_space([*sweep_overrides(digit_folder, tmp_path), *choices])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_sweep("digits", space, trials=4, out_dir=tmp_path / "runs", storage=storage)
    refused = [
        t.params["model.freeze_backbone"] and t.params["model.prune_channels"] > 0
        for t in result.trials
    ]
    assert True in refused and False in refused, [t.params for t in result.trials]
    for trial, refuse in zip(result.trials, refused, strict=True):
        if refuse:
            assert trial.state == "FAIL"
            assert trial.error is not None and "a pruned backbone has to be" in trial.error
        else:
            assert trial.state == "COMPLETE" and trial.bundle is not None
    assert result.best is not None


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_keeps_the_study(digit_folder: Path, tmp_path: Path) -> None:
    from tests.test_output import mlfactory_process

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, epochs=50),
        *SMALL_NETWORK,
        "model.freeze_backbone=true",
    ]
    args = ["sweep", "digits", *overrides, LR, "--trials", "2", "--no-prune"]
    process = mlfactory_process([*args, "--storage", storage, "--out", "runs"], tmp_path)
    last = tmp_path / "runs" / "trial-0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.is_file(), process.communicate()[1]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    final = stderr.strip().splitlines()[-1]
    assert final == (
        "interrupted; the study 'digits-sweep' keeps its 0 finished trial(s): run the same "
        "command to add more"
    )
    study = optuna.load_study(study_name="digits-sweep", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    assert study.trials[0].user_attrs["error"] == "interrupted (Ctrl-C)"  # the table says why
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"
    (trial_run,) = client.search_runs(
        [client.get_experiment_by_name("mlfactory").experiment_id],
        filter_string="tags.`mlfactory.sweep_trial` = '0'",
    )
    assert trial_run.info.status == "KILLED"
