"""Training against a real MLflow tracking server on PostgreSQL (what a team runs), with the
server keeping the artifacts: the run, its metrics and its bundle land there, and a server of
predictions serves the bundle by run id from there, and by alias from the server's registry."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from mlfactory.config.loader import load_recipe
from mlfactory.predictor import Predictor
from mlfactory.registry import bundle_digest, register_bundle
from mlfactory.serving.process import free_port
from mlfactory.targets import resolve_bundle
from tests.conftest import SMALL_NETWORK, fast_digits_overrides
from tests.postgres import postgres_url  # noqa: F401  (the fixture)

START_TIMEOUT_S = 120


@pytest.fixture
def mlflow_server(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[str, Path]]:
    """(URL, artifact folder) of `mlflow server` on a new PostgreSQL database, on a free
    loopback port, proxying the artifacts it stores in the folder."""
    name = f"mlflow_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    store = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    artifacts, port = tmp_path / "server-artifacts", free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        artifacts.as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log')}")
            time.sleep(0.5)
        yield url, artifacts
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_a_run_tracked_on_an_mlflow_server_is_served_from_it(
    mlflow_server: tuple[str, Path],
    digit_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.tracking import MlflowClient

    from mlfactory.training.train import train

    url, server_artifacts = mlflow_server
    local = [o for o in fast_digits_overrides(digit_folder, tmp_path, 1) if "tracking." not in o]
    recipe = load_recipe("digits", [*local, *SMALL_NETWORK, f"tracking.tracking_uri={url}"])
    result = train(recipe, tmp_path / "run")

    client = MlflowClient(url)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/acc"] == pytest.approx(result.metrics["accuracy"])
    assert run.data.tags["data_fingerprint"] == result.bundle.meta.data_fingerprint
    logged = {artifact.path for artifact in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/model.onnx", "bundle/bundle.json"} <= logged
    # the server holds the bundle: nothing of it went to a folder beside the client
    stored = list(server_artifacts.rglob("model.onnx"))
    assert [path.read_bytes() for path in stored] == [result.bundle.model_path.read_bytes()]
    assert not list((tmp_path / "run").parent.glob("mlruns*"))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    served = resolve_bundle(result.mlflow_run_id)  # what `mlfactory serve RUN_ID` loads
    assert served.meta.version == result.bundle.meta.version
    image = next((digit_folder / "7").iterdir()).read_bytes()
    assert Predictor(served).predict([image]) == Predictor(result.bundle).predict([image])

    # the server's Model Registry (on PostgreSQL): the run folder registered, served by alias
    registered, _ = register_bundle(resolve_bundle(tmp_path / "run"), aliases=["champion"])
    assert client.get_model_version_by_alias("digits", "champion").run_id == registered.run_id
    champion = resolve_bundle("models:/digits@champion")  # `mlfactory serve models:/...`
    assert bundle_digest(champion.path) == bundle_digest(result.bundle.path)
    assert Predictor(champion).predict([image]) == Predictor(result.bundle).predict([image])
