"""MLflow artifact stores by the scheme of their location: the client library each needs, and
what to check when one cannot be read. A run's artifacts are in a local folder, behind an MLflow
server that proxies them (`mlflow-artifacts:`), or in a bucket the client reads itself (`s3:`,
`gs:`, `wasbs:`)."""

from __future__ import annotations

import importlib.util

# What to check when a run's artifact store cannot be read, by the scheme of its location
# (`mlflow-artifacts:`: those an MLflow server stores for its clients, `--artifacts-destination`).
ARTIFACT_STORE_HINTS = {
    "mlflow-artifacts:": "the MLflow server keeps them: check its --artifacts-destination and its "
    "access to it",
    "s3:": "check the bucket, its endpoint (MLFLOW_S3_ENDPOINT_URL) and the AWS_* credentials",
    "gs:": "check the bucket and the Google credentials (GOOGLE_APPLICATION_CREDENTIALS)",
    "wasbs:": "check the container and AZURE_STORAGE_CONNECTION_STRING (or "
    "AZURE_STORAGE_ACCESS_KEY)",
}


# The client library MLflow reads each kind of artifact store with; none of them comes with the
# serving install (`mlfactory[serve]` and mlflow-skinny). Pinned as requirements/lock.txt pins them.
ARTIFACT_STORE_CLIENTS = {
    "s3:": ("boto3", "boto3==1.43.117"),
    "gs:": ("google.cloud.storage", "google-cloud-storage==3.17.1"),
    "wasbs:": ("azure.storage.blob", "azure-storage-blob==12.31.1 azure-identity==1.27.0"),
}


def missing_artifact_client(root: str, verb: str = "read") -> str | None:
    """Why artifacts at `root` cannot be `verb` here: the client library of their store is not
    installed (with the command that installs it); None when it is, or none is needed."""
    scheme = next((s for s in ARTIFACT_STORE_CLIENTS if root.startswith(s)), None)
    if scheme is None:
        return None
    module, package = ARTIFACT_STORE_CLIENTS[scheme]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
        found = False
    if found:
        return None
    return (
        f"its artifacts at {root} need {module} to be {verb}, which is not installed: "
        f"pip install {package}"
    )


def artifact_store_hint(root: str) -> str:
    """What to check when artifacts at `root` cannot be read."""
    scheme = next((s for s in ARTIFACT_STORE_HINTS if root.startswith(s)), None)
    if scheme is None:
        return "check the store's location and your access to it"
    return ARTIFACT_STORE_HINTS[scheme]
