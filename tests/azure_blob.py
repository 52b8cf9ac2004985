"""An Azure Blob Storage endpoint for tests: Azurite, Microsoft's Azure Storage emulator, in its
own process on a free loopback port, stopped afterwards.

scripts/setup.sh installs it with npm from requirements/azurite (its package-lock pins every
package). The Azure clients, adlfs (DVC's Azure plugin) and azure-storage-blob (MLflow's
wasbs:// artifact store), reach it through AZURE_STORAGE_CONNECTION_STRING, which the fixture
sets to Azurite's well-known development account. Use it as a fixture:
`from tests.azure_blob import azure_blob_connection  # noqa: F401`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlfactory.serving.process import HOST, free_port
from tests.local_server import local_server

AZURITE = Path(__file__).parents[1] / "requirements" / "azurite" / "node_modules" / ".bin"
# Azurite's development account: a documented, public name and key that only Azurite accepts.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(blob_endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={blob_endpoint}/{ACCOUNT};"
    )


@pytest.fixture(scope="module")
def azure_blob_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The connection string of a fresh, empty Azure Blob endpoint, also in the environment's
    AZURE_STORAGE_CONNECTION_STRING meanwhile."""
    azurite = AZURITE / "azurite-blob"
    if not azurite.is_file():
        pytest.fail(f"Azurite not found at {azurite}: run scripts/setup.sh (it needs npm)")
    if shutil.which("node") is None:
        pytest.fail("Azurite needs Node.js: apt-get install nodejs")
    folder = tmp_path_factory.mktemp("azure")
    log, port = folder / "server.log", free_port()
    connection = connection_string(f"http://{HOST}:{port}")
    command = [str(azurite), "--blobHost", HOST, "--blobPort", str(port)]
    command += ["--location", str(folder / "blobs"), "--skipApiVersionCheck", "--loose"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
        with local_server("Azurite", command, port, log):
            yield connection
