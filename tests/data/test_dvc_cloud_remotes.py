"""`dvc:` sources whose DVC remote is a cloud bucket, as teams run them: S3, Google Cloud Storage
and Azure Blob Storage, each through DVC's own plugin over HTTP to an emulator of the service on
loopback (moto, gcp-storage-emulator, Azurite). Real digits are pushed to the bucket; a clone
with no DVC cache reads them back; a missing plugin and an endpoint that is down each give one
line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import DataError
from mlfactory.serving.process import HOST, free_port
from tests.azure_blob import azure_blob_connection, connection_string  # noqa: F401
from tests.data.conftest import MakeRecipe
from tests.data.dvc_repos import dvc, dvc_site_cache, git  # noqa: F401  (the fixture)
from tests.gcs import gcs_endpoint  # noqa: F401  (the fixture)
from tests.s3 import s3_endpoint  # noqa: F401  (the fixture)

pytest.importorskip("dvc")

IMAGES = 18  # 6 of each of three digits


def pushed_digits(
    root: Path, mnist_pngs: dict[str, list[Path]], url: str, *settings: tuple[str, str]
) -> Path:
    """A repository whose data/digits (three digits, six each) is pushed to the remote `url`
    (with `dvc remote modify` `settings`)."""
    origin = root / "origin"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    dvc("init", "-q", cwd=origin)
    dvc("remote", "add", "-d", "storage", url, cwd=origin)
    for option, value in settings:
        dvc("remote", "modify", "storage", option, value, cwd=origin)
    for label in "012":
        (origin / "data" / "digits" / label).mkdir(parents=True)
        for path in mnist_pngs[label][:6]:
            shutil.copy(path, origin / "data" / "digits" / label / path.name)
    dvc("add", "-q", "data/digits", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", "digits", cwd=origin)
    dvc("push", "-q", cwd=origin)
    return origin


def read_from_a_clone(
    origin: Path, make_recipe: MakeRecipe, monkeypatch: pytest.MonkeyPatch, name: str
) -> Path:
    """Clone `origin`, read data/digits in the clone (from the remote only), and check it is the
    data that was pushed. The clone's folder is the working directory afterwards."""
    clone = origin.parent / "clone"
    git("clone", "-q", str(origin), str(clone), cwd=origin.parent)
    monkeypatch.chdir(clone)
    dataset = prepare_dataset(make_recipe("dvc:data/digits", name=name))
    assert dataset.labels == ["0", "1", "2"]
    assert dataset.version == f"dvc:data/digits@{git('rev-parse', 'HEAD', cwd=origin)}"
    plain = prepare_dataset(make_recipe(origin / "data" / "digits", name=f"{name}-plain"))
    assert dataset.fingerprint == plain.fingerprint
    assert not (clone / ".dvc" / "cache").exists()  # read from the bucket, not a local cache
    return clone


def assert_missing_plugin_is_one_line(clone: Path, module: str, extra: str) -> None:
    """`mlfactory data` in the clone, in a process where DVC's plugin `module` is missing (as
    with `mlfactory[dvc]` alone): one line with the command that adds it."""
    script = (
        f"import sys; sys.modules[{module!r}] = None; from mlfactory.cli import main; "
        "main(['data', 'image', 'data.source=dvc:data/digits', 'data.cache_dir=no-plugin'])"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=clone, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        f"error: dvc: the repository's DVC remote is on {extra}, whose DVC plugin is not "
        f"installed: pip install 'dvc[{extra}]==3.67.1'"
    )


class _Refuses(BaseHTTPRequestHandler):
    """Answers every request as GCS answers one without valid credentials."""

    def do_GET(self) -> None:
        body = json.dumps({"error": {"code": 401, "message": "Login Required."}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fetch_error(make_recipe: MakeRecipe, cache_dir: Path) -> str:
    with pytest.raises(DataError) as caught:
        prepare_dataset(make_recipe("dvc:data/digits", name="down", cache_dir=cache_dir))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("dvc: cannot fetch data/digits at HEAD")
    assert message.endswith("is the remote reachable?")
    return message


def test_a_remote_in_an_s3_bucket(
    s3_endpoint: str,  # noqa: F811
    mnist_pngs: dict[str, list[Path]],
    make_recipe: MakeRecipe,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DVC's S3 plugin (s3fs and boto3) against moto's S3 server."""
    import boto3

    bucket = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket.create_bucket(Bucket="mlfactory-data")
    url = "s3://mlfactory-data/dvc"
    origin = pushed_digits(tmp_path, mnist_pngs, url, ("endpointurl", s3_endpoint))
    listed = bucket.list_objects_v2(Bucket="mlfactory-data", Prefix="dvc/")
    assert listed["KeyCount"] == IMAGES + 1  # every image, and the folder's .dir listing
    clone = read_from_a_clone(origin, make_recipe, monkeypatch, "from-s3")

    assert_missing_plugin_is_one_line(clone, "dvc_s3", "s3")

    # The bucket's endpoint down (a port nobody listens on): one line that says so. (boto3
    # retries each object 5 times by default, about 20 s here; once is enough to see the error.)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    down = f"http://{HOST}:{free_port()}"
    dvc("remote", "modify", "--local", "storage", "endpointurl", down, cwd=clone)
    message = fetch_error(make_recipe, tmp_path / "c2")
    assert "EndpointConnectionError: Could not connect to the endpoint URL" in message


def test_a_remote_in_a_gcs_bucket(
    gcs_endpoint: str,  # noqa: F811
    mnist_pngs: dict[str, list[Path]],
    make_recipe: MakeRecipe,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DVC's GCS plugin (gcsfs) against gcp-storage-emulator, which STORAGE_EMULATOR_HOST
    names, as a team testing against fake-gcs-server or the like would."""
    from google.cloud import storage

    client = storage.Client()
    client.create_bucket("mlfactory-data")
    origin = pushed_digits(tmp_path, mnist_pngs, "gs://mlfactory-data/dvc")
    listed = list(client.list_blobs("mlfactory-data", prefix="dvc/"))
    assert len(listed) == IMAGES + 1
    clone = read_from_a_clone(origin, make_recipe, monkeypatch, "from-gcs")
    # The CLI says what it fetches from where (a remote that does not answer takes minutes to
    # give up), then the dataset, and nothing else: gcsfs warns once per file that it cannot ask
    # the emulator for the bucket's storage layout (harmless; it falls back), unless quieted.
    command = ["data", "image", "data.source=dvc:data/digits", "data.cache_dir=cli"]
    shown = subprocess.run(
        [sys.executable, "-m", "mlfactory.cli", *command], cwd=clone, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "version dvc:data/digits@" in shown.stdout
    commit = git("rev-parse", "HEAD", cwd=origin)[:12]
    assert shown.stderr.splitlines() == [
        f"data: fetching data/digits at HEAD ({commit}) from the DVC remote gs://mlfactory-data/dvc"
    ]

    assert_missing_plugin_is_one_line(clone, "dvc_gs", "gs")

    # The remote's bucket gone (or misnamed). (An endpoint that cannot be reached gives one line
    # too, after the client's own retries: about 2 minutes for gcsfs.)
    dvc("remote", "modify", "--local", "storage", "url", "gs://no-such-bucket/dvc", cwd=clone)
    assert "FileNotFoundError: [Errno 2] No storage files available" in fetch_error(
        make_recipe, tmp_path / "c2"
    )

    # A store that refuses the caller (GCS's answer to a request without credentials, 401
    # "Login Required", which gcsfs does not retry): one line, not a traceback, and not gcsfs's
    # own logged traceback before it.
    with refusing_server() as refusing:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": refusing}
        command = ["data", "image", "data.source=dvc:data/digits", "data.cache_dir=refused"]
        refused = subprocess.run(
            [sys.executable, "-m", "mlfactory.cli", *command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
        )
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("data: fetching data/digits at HEAD")
    assert lines[1].startswith("error: dvc: cannot fetch data/digits at HEAD"), lines
    assert "HttpError: Login Required" in lines[1]
    assert len(lines) == 2, refused.stderr[-3000:]


def test_a_remote_in_an_azure_container(
    azure_blob_connection: str,  # noqa: F811
    mnist_pngs: dict[str, list[Path]],
    make_recipe: MakeRecipe,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DVC's Azure plugin (adlfs and azure-storage-blob) against Azurite, reached through the
    connection string in AZURE_STORAGE_CONNECTION_STRING."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azure_blob_connection)
    container = service.create_container("mlfactory-data")
    origin = pushed_digits(tmp_path, mnist_pngs, "azure://mlfactory-data/dvc")
    assert len(list(container.list_blobs(name_starts_with="dvc/"))) == IMAGES + 1
    clone = read_from_a_clone(origin, make_recipe, monkeypatch, "from-azure")

    assert_missing_plugin_is_one_line(clone, "dvc_azure", "azure")

    # The remote's container gone (or misnamed). (An endpoint that cannot be reached gives one
    # line too, after azure-core's retries: about 4 minutes.)
    gone = "azure://no-such-container/dvc"
    dvc("remote", "modify", "--local", "storage", "url", gone, cwd=clone)
    assert "FileNotFoundError: [Errno 2] No storage files available" in fetch_error(
        make_recipe, tmp_path / "c2"
    )
