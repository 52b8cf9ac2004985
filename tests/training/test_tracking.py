"""The MLflow logger of training: a Ctrl-C never cuts one of its writes in half, and a run
whose artifact store cannot be written here is refused before it trains."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.config.loader import load_recipe
from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import ConfigError
from mlfactory.mlflow_store import check_tracking_store
from mlfactory.serving.process import free_port
from mlfactory.tracking import load_run_state, save_run_state, without_secrets
from mlfactory.training.run_start import start_tracking
from mlfactory.training.tracking import InterruptSafeMLFlowLogger, interrupt_after
from tests.conftest import SMALL_NETWORK, fast_digits_overrides
from tests.test_cli import assert_one_line_error

runner = CliRunner()


def test_a_ctrl_c_inside_the_block_takes_effect_when_it_ends() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt), interrupt_after():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal arrives while the block still runs
        finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupt_after():  # no Ctrl-C: nothing raised
        finished.append(True)
    assert finished == [True, True]


def test_ctrl_c_while_logging_metrics_leaves_the_run_markable_as_killed(tmp_path: Path) -> None:
    """Real Ctrl-Cs (SIGINT) at random moments of real writes to MLflow's SQLite store.

    An interrupted write used to keep the database locked, so that marking the run KILLED
    waited out SQLite's 20 s busy timeout and failed (measured: within 12 of 60 such Ctrl-Cs).
    """
    logger = InterruptSafeMLFlowLogger(
        experiment_name="interrupts",
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
        artifact_location=str(tmp_path / "artifacts"),
    )
    rng = random.Random(0)

    def press_ctrl_c(_signum: int, _frame: FrameType | None) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGALRM, press_ctrl_c)
    try:
        for trial in range(15):
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.02, 0.2))
            with pytest.raises(KeyboardInterrupt):
                for step in range(100_000):
                    logger.log_metrics({"loss": 1.0 / (step + 1), "trial": trial}, step=step)
            started = time.monotonic()
            logger.experiment.set_terminated(logger.run_id, "KILLED")
            logger.experiment.set_terminated(logger.run_id, "RUNNING")
            assert time.monotonic() - started < 10, "the store stayed locked after a Ctrl-C"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # Logging went on after every Ctrl-C: each trial's metrics are in the run.
    history = logger.experiment.get_metric_history(logger.run_id, "trial")
    assert {int(metric.value) for metric in history} == set(range(15))


GCS_CLIENT = "google.cloud.storage"
NOT_INSTALLED = (
    "its artifacts at gs://team-artifacts/mlflow need google.cloud.storage to be written, "
    "which is not installed: pip install google-cloud-storage==3.17.1"
)


def test_a_bucket_store_without_its_client_is_refused_before_torch_is_imported(
    digit_folder: Path, tmp_path: Path
) -> None:
    """Artifacts to go to a GCS bucket, where google-cloud-storage is not installed: one line
    with the pip command at once (not a traceback when the bundle is logged at the end), before
    the training stack is imported; no run is opened, and no store is left behind."""
    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, 1),
        "tracking.artifact_location=gs://team-artifacts/mlflow",
    ]
    script = (
        f"import sys; sys.modules[{GCS_CLIENT!r}] = None\n"
        "from mlfactory.cli import app\n"
        "try:\n"
        f"    app(['train', 'digits', '--out', 'run', *{overrides!r}])\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["2", "False"], done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error == (
        f"error: tracking: experiment 'mlfactory' (tracking.artifact_location): {NOT_INSTALLED}"
    )
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "run").exists()


def test_an_experiments_bucket_is_checked_where_the_recipe_names_another_one(
    digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing experiment keeps its artifact location whatever the recipe says: that one is
    checked, in one line naming the experiment."""
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    MlflowClient(store).create_experiment("team", artifact_location="gs://team-artifacts/mlflow")
    monkeypatch.setitem(sys.modules, GCS_CLIENT, None)
    config = load_recipe(
        "digits",
        [*fast_digits_overrides(digit_folder, tmp_path, 1), "tracking.experiment=team"],
    ).config
    with pytest.raises(ConfigError) as raised:
        check_tracking_store(config.tracking)
    assert str(raised.value) == f"tracking: experiment 'team': {NOT_INSTALLED}"


def test_a_run_whose_artifact_root_the_server_chose_is_marked_failed(
    digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket known only once the run exists (an MLflow server's default artifact root):
    refused when the run starts, before any epoch, and the run opened is marked FAILED."""
    recipe = load_recipe(
        "digits",
        [
            *fast_digits_overrides(digit_folder, tmp_path, 1),
            "tracking.artifact_location=gs://team-artifacts/mlflow",
        ],
    )
    dataset = prepare_dataset(recipe.config)
    monkeypatch.setitem(sys.modules, GCS_CLIENT, None)
    with pytest.raises(ConfigError) as raised:
        start_tracking(recipe, dataset, tmp_path / "run", None)
    assert str(raised.value).startswith("tracking: MLflow run ")
    assert str(raised.value).endswith(f"/artifacts need {NOT_INSTALLED.split(' need ')[1]}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [run.info.status for run in runs] == ["FAILED"]


# Tracking URIs MLflow cannot use and the error they get; {closed} is a loopback port nobody
# listens on (bound a moment ago and let go).
UNUSABLE_STORES = {
    "garbage": "tracking.tracking_uri=garbage cannot be used: The filesystem tracking backend",
    "foo://u:secret@host/x": "tracking.tracking_uri=foo://u:***@host/x cannot be used: ",
    "http://127.0.0.1:{closed}": (
        "tracking.tracking_uri: the MLflow server http://127.0.0.1:{closed} does not answer"
    ),
    # At once, not after MLflow's two minutes of retries
    "postgresql+psycopg://u:secret@127.0.0.1:{closed}/x": (
        "tracking.tracking_uri: the database postgresql+psycopg://u:***@127.0.0.1:{closed}/x "
        "cannot be reached or refused the connection: connection failed"
    ),
}


@pytest.mark.parametrize(("uri", "message"), UNUSABLE_STORES.items(), ids=list(UNUSABLE_STORES))
def test_a_tracking_store_that_cannot_be_used_is_one_line_before_the_data(
    uri: str, message: str, tmp_path: Path
) -> None:
    """A plain path (MLflow's file store, which MLflow refuses), a URI of no store MLflow knows
    (its password hidden), a server and a database that do not answer: one line naming
    tracking.tracking_uri and MLflow's reason, exit code 2, before the data is prepared or the
    run folder made."""
    port = free_port()
    uri, message = uri.format(closed=port), message.format(closed=port)
    args = ["train", "digits", "--out", str(tmp_path / "run"), *tiny_run(tmp_path)]
    result = runner.invoke(app, [*args, f"tracking.tracking_uri={uri}"])
    assert_one_line_error(result, message)
    assert "secret" not in result.output
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "run").exists()


def tiny_run(workdir: Path) -> list[str]:
    """The packaged digits recipe, its data cached in `workdir`, two batches of one epoch."""
    return [
        f"data.cache_dir={workdir / 'cache'}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        *SMALL_NETWORK,
    ]


def test_run_state_and_params_keep_no_password_of_a_store(tmp_path: Path) -> None:
    """run.json, bundle.json and the MLflow params keep a store's URL without its password: the
    environment gives it where the URL is used again (PGPASSWORD, MLFLOW_TRACKING_PASSWORD)."""
    recipe = {
        "tracking": {"tracking_uri": "postgresql+psycopg://mlf:s3cret@db:5432/mlflow"},
        "data": {"source": "https://u:tok3n@example.com/d.csv", "classes": ["a://b"]},
        "trainer": {"lr": 0.1},
    }
    signed = "https://b.s3.amazonaws.com/d.zip?X-Amz-Date=2026&X-Amz-Signature=S1GN#sha256=ab"
    overrides = [
        "tracking.tracking_uri=http://alice:hunter2@mlflow:5000",
        "trainer.lr=0.1",
        f"data.source={signed}",
    ]
    save_run_state(tmp_path, {"recipe": recipe, "overrides": overrides, "mlflow_run_id": "r"})
    written = (tmp_path / "run.json").read_text()
    for password in ("s3cret", "tok3n", "hunter2", "S1GN"):
        assert password not in written
    state = load_run_state(tmp_path)
    assert state is not None
    assert state["recipe"]["tracking"]["tracking_uri"] == "postgresql+psycopg://mlf@db:5432/mlflow"
    assert state["recipe"]["data"]["source"] == "https://u@example.com/d.csv"
    assert state["recipe"]["trainer"] == {"lr": 0.1}
    assert state["overrides"] == [
        "tracking.tracking_uri=http://alice@mlflow:5000",
        "trainer.lr=0.1",
        "data.source=https://b.s3.amazonaws.com/d.zip?X-Amz-Date=2026&X-Amz-Signature=***#sha256=ab",
    ]
    assert without_secrets("sqlite:///mlruns.db") == "sqlite:///mlruns.db"
    assert without_secrets("http://[::1/x") == "http://[::1/x"  # not a URL: as it is


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        # an http(s) URL's lone user name is a token used as basic auth: left out
        (
            "https://ghp_T0KEN@github.com/o/r/archive/main.zip",
            "https://github.com/o/r/archive/main.zip",
        ),
        ("git+https://ghp_T0KEN@github.com/o/r", "git+https://github.com/o/r"),
        ("HTTP://ghp_T0KEN@h:80/d.csv", "http://h:80/d.csv"),
        # a database's lone user name pairs with PGPASSWORD or ~/.pgpass: kept
        ("postgresql+psycopg://mlf@db:5432/mlflow", "postgresql+psycopg://mlf@db:5432/mlflow"),
        ("mysql://mlf@db/mlflow", "mysql://mlf@db/mlflow"),
        # a fragment's and a query's credentials, the names a reviewer found missing
        ("https://h/cb#access_token=T0KEN", "https://h/cb#access_token=***"),
        ("postgresql://mlf@db/m?sslpassword=T0KEN", "postgresql://mlf@db/m?sslpassword=***"),
        (
            "https://h/d?client_secret=T0KEN&access_key=T0KEN",
            "https://h/d?client_secret=***&access_key=***",
        ),
    ],
)
def test_credentials_a_url_holds_are_left_out_by_scheme(url: str, stored: str) -> None:
    assert without_secrets(url) == stored
    assert without_secrets({"data": {"source": url}}) == {"data": {"source": stored}}
    assert "T0KEN" not in json.dumps(without_secrets([f"data.source={url}"]))


def test_the_logger_logs_the_recipe_without_secrets(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    logger = InterruptSafeMLFlowLogger(experiment_name="digits", tracking_uri=uri)
    logger.log_hyperparams({"tracking.tracking_uri": "postgresql://mlf:s3cret@db/x", "lr": 0.1})
    params = MlflowClient(uri).get_run(logger.run_id or "").data.params
    assert params == {"tracking.tracking_uri": "postgresql://mlf@db/x", "lr": "0.1"}


def committed_checkout(repo: Path) -> Path:
    """A new git checkout at `repo` with one committed file."""
    repo.mkdir()
    (repo / "notes.txt").write_text("one")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "notes"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True
        )
    return repo


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="only root can give a folder to another user",
)
def test_git_commit_of_a_checkout_another_user_owns_warns_naming_safe_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Root in the training container, training in a checkout mounted from the host."""
    from mlfactory.output import PHASE_LOGGER
    from mlfactory.tracking import git_commit

    repo = committed_checkout(tmp_path / "repo")
    for path in [repo, *repo.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)
    home = tmp_path / "home"  # a global Git config of its own: no safe.directory in it
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.chdir(repo)
    with caplog.at_level(logging.WARNING, logger=PHASE_LOGGER):
        assert git_commit() is None
    assert [record.getMessage() for record in caplog.records] == [
        f"git: the checkout {repo} belongs to another user, so Git refuses to read it and the "
        f"run records no commit: trust it with `git config --global --add safe.directory "
        f"{repo}`, or run as the folder's owner"
    ]
    caplog.clear()
    (home / ".gitconfig").write_text(f"[safe]\n\tdirectory = {repo}\n")  # the fix it names
    commit = git_commit()
    assert commit is not None and len(commit) == 40 and not caplog.records


def test_git_commit_is_dirty_when_a_file_the_run_used_is_untracked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlfactory.tracking import git_commit

    repo = committed_checkout(tmp_path / "project")
    monkeypatch.chdir(repo)
    recipe = repo / "mine.yaml"  # written for the run, never committed
    recipe.write_text("defaults: [digits, _self_]\n")
    clean = git_commit()
    assert clean is not None and len(clean) == 40  # other untracked files do not count
    assert git_commit([Path("mine.yaml")]) == f"{clean}-dirty"
    (tmp_path / "elsewhere.yaml").write_text("")
    assert git_commit([tmp_path / "elsewhere.yaml"]) == clean  # not in the checkout
    subprocess.run(["git", "add", "mine.yaml"], cwd=repo, check=True)
    assert git_commit() == f"{clean}-dirty"  # staged, not committed
