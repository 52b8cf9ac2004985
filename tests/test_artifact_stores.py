"""MLflow's artifact stores by scheme: what each needs installed, what to check when one cannot
be read (tests/training/test_tracking_server.py reads real buckets on emulators)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlfactory.artifact_stores import (
    ARTIFACT_STORE_CLIENTS,
    artifact_store_hint,
    missing_artifact_client,
)


@pytest.mark.parametrize(
    ("root", "setting"),
    [
        ("mlflow-artifacts:/1/abc/artifacts", "--artifacts-destination"),
        ("s3://team/mlflow/1/abc/artifacts", "MLFLOW_S3_ENDPOINT_URL"),
        ("gs://team/mlflow/1/abc/artifacts", "GOOGLE_APPLICATION_CREDENTIALS"),
        (
            "wasbs://team@acct.blob.core.windows.net/1/abc/artifacts",
            "AZURE_STORAGE_CONNECTION_STRING",
        ),
        ("hdfs://namenode/mlflow/1/abc/artifacts", "the store's location and your access to it"),
    ],
)
def test_an_unreadable_artifact_store_names_what_to_check(root: str, setting: str) -> None:
    """The one-line error of a run whose artifacts cannot be read points at the settings of its
    store's kind (tests/training/test_tracking_server.py reads real buckets)."""
    assert setting in artifact_store_hint(root)


def test_the_storage_clients_named_are_the_locked_versions() -> None:
    """The pip command for a missing artifact-store client pins what the lock pins."""
    lock = (Path(__file__).parents[1] / "requirements" / "lock.txt").read_text().splitlines()
    for _, packages in ARTIFACT_STORE_CLIENTS.values():
        for pin in packages.split():
            assert pin in lock, pin


def test_a_store_whose_client_is_installed_needs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_artifact_client("s3://team/mlflow/1/abc/artifacts") is None  # boto3 is here
    assert missing_artifact_client("/srv/mlruns/1/abc/artifacts") is None
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert missing_artifact_client("s3://team/mlflow/1/abc/artifacts", "written") == (
        "its artifacts at s3://team/mlflow/1/abc/artifacts need boto3 to be written, which is "
        "not installed: pip install boto3==1.43.117"
    )
