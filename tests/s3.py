"""An S3 endpoint for tests: moto's S3 server (`python -m moto.server`, the server s3fs and
aiobotocore test against) in its own process on a free loopback port, stopped afterwards.

It speaks the S3 REST protocol that boto3, s3fs and DVC's S3 remote use, so every client call
goes over HTTP as it would to AWS or MinIO. Credentials are any non-empty pair: the fixture sets
throw-away ones in the environment and points the AWS config files nowhere, so nothing from
the machine's own AWS set-up is read. Use it as a fixture:
`from tests.s3 import s3_endpoint  # noqa: F401`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from mlfactory.serving.process import HOST, free_port
from tests.local_server import local_server

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mlfactory-test",
    "AWS_SECRET_ACCESS_KEY": "mlfactory-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fresh, empty S3 endpoint; the environment carries credentials for it."""
    folder = tmp_path_factory.mktemp("s3")
    log, port = folder / "server.log", free_port()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        patch.setenv("AWS_CONFIG_FILE", str(folder / "no-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-credentials"))
        command = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        with local_server("moto's S3 server", command, port, log):
            yield f"http://{HOST}:{port}"
