"""A Google Cloud Storage endpoint for tests: gcp-storage-emulator (an in-memory server of GCS's
JSON API) in its own process on a free loopback port, stopped afterwards.

Google's clients, gcsfs (DVC's GCS plugin) and google-cloud-storage (MLflow's gs:// artifact
store), send every call to it when STORAGE_EMULATOR_HOST names it, as they would to
storage.googleapis.com, without credentials. The fixture also points gcloud's configuration
nowhere and skips the metadata-server probe, so nothing of the machine's own Google set-up is
read. Use it as a fixture: `from tests.gcs import gcs_endpoint  # noqa: F401`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from mlfactory.serving.process import HOST, free_port
from tests.local_server import local_server

PROJECT = "mlfactory-test"


@pytest.fixture(scope="module")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fresh, empty GCS endpoint; STORAGE_EMULATOR_HOST names it meanwhile."""
    folder = tmp_path_factory.mktemp("gcs")
    log, port = folder / "server.log", free_port()
    url = f"http://{HOST}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        patch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
        patch.setenv("CLOUDSDK_CONFIG", str(folder / "no-gcloud"))
        patch.setenv("NO_GCE_CHECK", "True")
        patch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        command = [sys.executable, "-m", "gcp_storage_emulator", "start"]
        command += ["--host", HOST, "--port", str(port), "--in-memory"]
        with local_server("gcp-storage-emulator", command, port, log):
            yield url
