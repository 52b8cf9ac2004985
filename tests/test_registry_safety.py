"""What register, fetch and compare say and leave behind when something goes wrong: no store's
password shown, a version registered without its alias said so, nothing created for a refused
name, a version that is not a bundle named as such, the version fetched the one printed, and no
fetched bundle left behind by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mlfactory import targets
from mlfactory.bundle import load_bundle
from mlfactory.cli import app
from mlfactory.registry_reasons import mlflow_reason
from mlfactory.serving.process import free_port, start_server
from mlfactory.training.train import TrainResult
from tests.conftest import MONITORED_PER_CLASS, untraced_env, write_digit_folder
from tests.test_cli import assert_one_line_error
from tests.test_registry import log_run, store

__all__ = ["store"]  # test_registry's fixture: a new SQLite store the commands use
runner = CliRunner()


class _Refusing(BaseHTTPRequestHandler):
    """An MLflow server behind a login: /health answers, every API call is 401 in plain text."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        health = self.path.startswith("/health")
        body = b"OK" if health else b"You are not authenticated. Please log in."
        self.send_response(200 if health else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """The URL of a `_Refusing` server, with a user and password in it."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://mlf:s3cret@127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_store_that_wants_credentials_is_named_without_its_password(
    refusing_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refusing_server)
    shown = refusing_server.replace("s3cret", "***")
    for args in (
        ["predict", "models:/digits@champion", "x.png"],
        ["fetch", "0" * 32, "--out", "x"],
        ["register", "models:/digits/1", "--alias", "champion"],
    ):
        result = runner.invoke(app, args)
        assert_one_line_error(result, "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        assert "s3cret" not in result.output
        assert shown in result.output, result.output


def test_mlflows_reason_is_a_line_that_says_something() -> None:
    listed = MlflowException(
        "When an mlflow-artifacts URI was supplied, the tracking URI must be a valid http or "
        "https URI. Perhaps you forgot to set it. To set the tracking URI, use either of the "
        "following methods:\n1. Set the MLFLOW_TRACKING_URI environment variable.\n2. Call it."
    )
    assert mlflow_reason(listed).endswith("Perhaps you forgot to set it.")
    only = MlflowException("Use either of the following:\n1. Set MLFLOW_TRACKING_URI.")
    assert mlflow_reason(only) == "1. Set MLFLOW_TRACKING_URI."
    secret = MlflowException("cannot reach postgresql://mlf:s3cret@db/mlflow")
    assert mlflow_reason(secret, "postgresql://mlf:s3cret@db/mlflow") == (
        "cannot reach postgresql://mlf:***@db/mlflow"
    )


def test_what_register_writes_is_what_it_says(
    trained_digits: TrainResult, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = log_run(trained_digits, store, tmp_path / "run")
    run_id = load_bundle(folder / "bundle").meta.mlflow_run_id
    # a name no filter can look up is refused before the model is created
    quoted = runner.invoke(app, ["register", str(folder), "--name", 'it\'s "q"'])
    assert_one_line_error(quoted, "use a name without both kinds of quote")
    assert MlflowClient(store).search_registered_models() == []
    # a run the store does not hold is said to be not there
    absent = runner.invoke(app, ["fetch", "0" * 32, "--out", str(tmp_path / "x")])
    assert_one_line_error(absent, f"MLflow run '{'0' * 32}' is not in the store {store}")

    # the version is registered, the alias refused after it: the version is named
    def locked(*_args: object) -> None:
        raise MlflowException("alias table is locked", error_code="INVALID_PARAMETER_VALUE")

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "set_registered_model_alias", locked)
        made = runner.invoke(app, ["register", str(folder), "--name", "proxy", "--alias", "a"])
    assert_one_line_error(
        made,
        "registered as models:/proxy/1, but the alias 'a' was not set: alias table is locked; "
        "set it with: mlfactory register models:/proxy/1 --alias a",
    )
    assert MlflowClient(store).get_model_version("proxy", "1").run_id == run_id

    # the store the version went into is the one named: the registry, when it is another
    registry = tmp_path / "registry.db"
    registry.touch()
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{registry}")
    made = runner.invoke(app, ["register", str(folder), "--alias", "champion"])
    assert made.exit_code == 0, made.output
    assert made.output.strip().splitlines()[-1] == (  # after MLflow's lines making the registry
        f"registered as models:/digits/1 (alias champion): the bundle of MLflow run {run_id} "
        f"in sqlite:///{registry}"
    )


def test_fetch_names_the_version_it_fetched_and_what_is_not_a_bundle(
    trained_digits: TrainResult, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = log_run(trained_digits, store, tmp_path / "run")
    run_id = str(load_bundle(folder / "bundle").meta.mlflow_run_id)
    assert runner.invoke(app, ["register", str(folder), "--alias", "champion"]).exit_code == 0
    client = MlflowClient(store)
    client.create_model_version("digits", f"runs:/{run_id}/bundle", run_id=run_id)  # version 2

    # the alias moves to version 2 while version 1 is fetched: version 1 is printed
    fetch = targets.download_registered

    def moving(uri: str, destination: Path) -> Path:
        folder = fetch(uri, destination)
        client.set_registered_model_alias("digits", "champion", "2")
        return folder

    monkeypatch.setattr(targets, "download_registered", moving)
    out = tmp_path / "out"
    fetched = runner.invoke(app, ["fetch", "models:/digits@champion", "--out", str(out)])
    assert fetched.exit_code == 0, fetched.output
    assert fetched.output.startswith("models:/digits/1 (bundle digits")

    # a version whose source is one file of the run, not its bundle
    client.create_registered_model("png")
    client.create_model_version("png", f"runs:/{run_id}/bundle/model.onnx", run_id=run_id)
    png = runner.invoke(app, ["fetch", "models:/png/1", "--out", str(tmp_path / "png")])
    assert_one_line_error(
        png,
        f"models:/png/1: its source runs:/{run_id}/bundle/model.onnx is not an mlfactory bundle",
    )
    dangling = tmp_path / "dangle"
    dangling.symlink_to(tmp_path / "nowhere")
    linked = runner.invoke(app, ["fetch", "models:/digits/1", "--out", str(dangling)])
    assert_one_line_error(linked, f"--out {dangling} is a symbolic link")


def test_compare_names_the_registered_versions(
    trained_digits: TrainResult, store: str, tmp_path: Path
) -> None:
    folder = log_run(trained_digits, store, tmp_path / "run")
    run_id = str(load_bundle(folder / "bundle").meta.mlflow_run_id)
    assert runner.invoke(app, ["register", str(folder), "--alias", "champion"]).exit_code == 0
    MlflowClient(store).create_model_version("digits", f"runs:/{run_id}/bundle", run_id=run_id)
    digits = write_digit_folder(tmp_path / "digits", 2, offset=MONITORED_PER_CLASS + 20)
    args = ["compare", "models:/digits@champion", "models:/digits/2", "--data", str(digits)]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    version = trained_digits.bundle.meta.version
    assert f"models:/digits/1 (digits {version})" in table.output
    assert f"models:/digits/2 (digits {version})" in table.output
    report = json.loads(runner.invoke(app, [*args, "--json"]).output)
    assert report["baseline"]["target"] == "models:/digits@champion"
    assert report["baseline"]["registered_version"] == "models:/digits/1"
    assert report["candidate"]["registered_version"] == "models:/digits/2"
    assert report["candidate"]["name"] == "digits"  # the bundle's own fields stay


def test_sigterm_removes_what_serve_fetched(
    trained_digits: TrainResult, store: str, tmp_path: Path
) -> None:
    folder = log_run(trained_digits, store, tmp_path / "run")
    assert runner.invoke(app, ["register", str(folder)]).exit_code == 0
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = untraced_env({"TMPDIR": str(temporary), "MLFLOW_TRACKING_URI": store})
    server = start_server(Path("models:/digits/1"), tmp_path / "serve.log", env=env)
    assert [p.name for p in temporary.iterdir() if p.name.startswith("mlfactory-model-")]
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=60)
    assert not [p for p in temporary.iterdir() if p.name.startswith("mlfactory-model-")]


# A download that takes its time: it prints its folder, then waits to be stopped.
_SLOW = (
    "import time\n"
    "from mlfactory import registry, targets\n"
    "def slow(folder, *_args):\n"
    "    (folder / 'part').write_text('x')\n"
    "    print(folder, flush=True)\n"
    "    time.sleep(120)\n"
)


@pytest.mark.parametrize(
    "call",
    [
        # fetch, serve and every command given a run id or a models:/ URI
        "with targets.downloads_removed():\n    targets._fetched(slow, ('store', None))\n",
        # register, checking the run's bundle against the folder given
        "registry.download_run_bundle = lambda run_id, folder, store: slow(folder)\n"
        "registry._run_bundle_digest('0' * 32, None)\n",
    ],
)
def test_sigterm_during_a_download_removes_it(call: str, tmp_path: Path) -> None:
    """Not by the default action (the process gone at once, the folder left behind)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW + call], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    fetched = Path(process.stdout.readline().strip())
    assert fetched.is_dir() and fetched.is_relative_to(tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
