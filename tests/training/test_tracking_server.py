"""Training against a real MLflow tracking server on PostgreSQL with its artifacts in an S3
bucket (what a team runs; the bucket on moto's S3 server on loopback, `tests/s3.py`): the run,
its metrics and its bundle land there through the server, which proxies the artifacts (the
client needs no bucket credentials), and a server of predictions serves the bundle by run id
from there, and by alias from the server's registry. Also runs whose artifacts the client
writes to a bucket itself (`tracking.artifact_location=` an S3, GCS or Azure Blob location, each
on an emulator of the service: `tests/s3.py`, `tests/gcs.py`, `tests/azure_blob.py`), and the
one-line error when that bucket cannot be read."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.config.loader import load_recipe
from mlfactory.predictor import Predictor
from mlfactory.registry import bundle_digest, register_bundle
from mlfactory.serving.process import free_port
from mlfactory.targets import resolve_bundle
from tests import azure_blob
from tests.azure_blob import azure_blob_connection  # noqa: F401  (the fixture)
from tests.conftest import SMALL_NETWORK, fast_digits_overrides, untraced_env
from tests.gcs import gcs_endpoint  # noqa: F401  (the fixture)
from tests.postgres import postgres_url  # noqa: F401  (the fixture)
from tests.s3 import s3_endpoint  # noqa: F401  (the fixture)
from tests.test_cli import assert_one_line_error

START_TIMEOUT_S = 120


@pytest.fixture
def mlflow_server(
    postgres_url: str,  # noqa: F811
    s3_endpoint: str,  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    """(URL, artifact bucket) of `mlflow server` on a new PostgreSQL database, on a free
    loopback port, proxying the artifacts it stores in a new bucket of the S3 endpoint."""
    name = f"mlflow_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    store = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    bucket, port = name.replace("_", "-"), free_port()
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        f"s3://{bucket}/artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (tmp_path / "mlflow-server.log").open("w")
    # Only the server reads the bucket: its endpoint is in the server's environment alone.
    env = untraced_env({"MLFLOW_S3_ENDPOINT_URL": s3_endpoint})
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log')}")
            time.sleep(0.5)
        yield url, bucket
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
    mlflow_server: tuple[str, str],
    s3_endpoint: str,  # noqa: F811
    digit_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow.tracking import MlflowClient

    from mlfactory.training.train import train

    url, bucket = mlflow_server
    local = [o for o in fast_digits_overrides(digit_folder, tmp_path, 1) if "tracking." not in o]
    # Credentials in the URI (which the server, without auth, ignores) reach it, as MLflow's
    # own client sends them, and are kept nowhere.
    with_password = url.replace("http://", "http://alice:hunter2@")
    store = [f"tracking.tracking_uri={with_password}"]
    recipe = load_recipe("digits", [*local, *SMALL_NETWORK, *store])
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "")  # removed at the end
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    capsys.readouterr()
    result = train(recipe, tmp_path / "run")
    printed = capsys.readouterr().out
    assert "View run" not in printed and "View experiment" not in printed  # MLflow's links

    client = MlflowClient(url)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    without = url.replace("http://", "http://alice@")
    assert run.data.params["tracking.tracking_uri"] == without
    for kept in (tmp_path / "run" / "run.json", result.bundle.path / "bundle.json"):
        assert "hunter2" not in kept.read_text() and without in kept.read_text()
    assert run.data.metrics["test/acc"] == pytest.approx(result.metrics["accuracy"])
    assert run.data.tags["data_fingerprint"] == result.bundle.meta.data_fingerprint
    logged = {artifact.path for artifact in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/model.onnx", "bundle/bundle.json"} <= logged
    # the bucket holds the bundle: nothing of it went to a folder beside the client
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="artifacts/")["Contents"]]
    stored = [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
    onnx = [data for key, data in zip(keys, stored, strict=True) if key.endswith("/model.onnx")]
    assert onnx == [result.bundle.model_path.read_bytes()]
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

    # The server's bucket gone: one line with the server's reason, not "no bundle".
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    for target in (result.mlflow_run_id, "models:/digits@champion"):
        outcome = CliRunner().invoke(app, ["predict", target, str(tmp_path)])
        assert_one_line_error(outcome, "The specified bucket does not exist")
        assert "the MLflow server keeps them: check its --artifacts-destination" in outcome.output


@dataclass
class ArtifactBucket:
    """A bucket a run's artifacts go to (`tracking.artifact_location`), on a store's emulator."""

    location: str
    read: Callable[[str], bytes]  # the object at a path under the location
    make_unreadable: Callable[[pytest.MonkeyPatch], None]
    error: str  # what the one-line error then says
    settings: str  # ... and the setting it tells to check
    client: tuple[str, str]  # the module MLflow reads the store with, and its pip package


def s3_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> ArtifactBucket:
    bucket = boto3.client("s3", endpoint_url=endpoint)
    bucket.create_bucket(Bucket="team-artifacts")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)

    def endpoint_down(patch: pytest.MonkeyPatch) -> None:
        # One attempt: boto3 retries a refused connection for seconds by default.
        patch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        patch.setenv("AWS_MAX_ATTEMPTS", "1")

    return ArtifactBucket(
        "s3://team-artifacts/mlflow",
        lambda key: bucket.get_object(Bucket="team-artifacts", Key=f"mlflow/{key}")["Body"].read(),
        endpoint_down,
        "EndpointConnectionError",
        "MLFLOW_S3_ENDPOINT_URL",
        ("boto3", "boto3=="),
    )


def gcs_bucket() -> ArtifactBucket:
    from google.cloud import storage

    bucket = storage.Client().create_bucket("team-artifacts")
    return ArtifactBucket(
        "gs://team-artifacts/mlflow",
        lambda key: bucket.blob(f"mlflow/{key}").download_as_bytes(),
        lambda _: bucket.delete(force=True),
        "NotFound: 404",
        "GOOGLE_APPLICATION_CREDENTIALS",
        ("google.cloud.storage", "google-cloud-storage=="),
    )


def azure_container(connection: str) -> ArtifactBucket:
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(connection).create_container("team")
    return ArtifactBucket(
        f"wasbs://team@{azure_blob.ACCOUNT}.blob.core.windows.net/mlflow",
        lambda key: container.download_blob(f"mlflow/{key}").readall(),
        lambda _: container.delete_container(),
        "ResourceNotFoundError: The specified container does not exist",
        "AZURE_STORAGE_CONNECTION_STRING",
        ("azure.storage.blob", "azure-storage-blob=="),
    )


@pytest.fixture(params=["s3", "gcs", "azure"])
def artifact_bucket(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> ArtifactBucket:
    """A new bucket on an emulator of S3, Google Cloud Storage or Azure Blob Storage, which
    MLflow's own artifact store for that scheme writes and reads."""
    if request.param == "s3":
        return s3_bucket(request.getfixturevalue("s3_endpoint"), monkeypatch)
    if request.param == "gcs":
        request.getfixturevalue("gcs_endpoint")
        return gcs_bucket()
    return azure_container(request.getfixturevalue("azure_blob_connection"))


@pytest.mark.slow
def test_a_run_with_its_artifacts_in_a_bucket_is_served_from_it(
    artifact_bucket: ArtifactBucket,
    digit_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlfactory.training.train import train

    overrides = [
        *fast_digits_overrides(digit_folder, tmp_path, 1),
        *SMALL_NETWORK,
        "tracking.experiment=in-a-bucket",
        f"tracking.artifact_location={artifact_bucket.location}",
    ]
    result = train(load_recipe("digits", overrides), tmp_path / "run")
    stored = artifact_bucket.read(f"{result.mlflow_run_id}/artifacts/bundle/model.onnx")
    assert stored == result.bundle.model_path.read_bytes()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    register_bundle(result.bundle, aliases=["champion"])
    image = next((digit_folder / "7").iterdir()).read_bytes()
    for target in (result.mlflow_run_id, "models:/digits@champion"):
        served = resolve_bundle(target)  # downloaded from the bucket
        assert bundle_digest(served.path) == bundle_digest(result.bundle.path)
        assert Predictor(served).predict([image]) == Predictor(result.bundle).predict([image])

    # Where the store's client library is not installed (the serving install has none): one
    # line with the pip command, for a run id and for a registered version alike.
    module, package = artifact_bucket.client
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from mlfactory.cli import main\n"
        f"for target in ({result.mlflow_run_id!r}, 'models:/digits@champion'):\n"
        "    try:\n"
        "        main(['fetch', target, '--out', 'fetched'])\n"
        "    except SystemExit as exc:\n"
        "        print('exit', exc.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.stdout.split() == ["exit", "2", "exit", "2"], done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr[-3000:]
    for line in lines:
        assert f"need {module} to be read, which is not installed: pip install {package}" in line

    # The bucket unreadable (S3: its endpoint down; GCS, Azure: the bucket deleted): one line
    # naming the store and the storage client's error, not MLflow's "please ensure that the
    # path is correct".
    artifact_bucket.make_unreadable(monkeypatch)
    for target in (result.mlflow_run_id, "models:/digits@champion"):
        outcome = CliRunner().invoke(app, ["predict", target, str(tmp_path)])
        assert_one_line_error(outcome, f"/artifacts cannot be read: {artifact_bucket.error}")
        root = f"{artifact_bucket.location}/{result.mlflow_run_id}/artifacts"
        assert root in outcome.output
        assert artifact_bucket.settings in outcome.output
