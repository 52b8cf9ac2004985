"""What `predict`, `serve` and `evaluate` accept as a model: a bundle, a run folder, a run id.

A target is a bundle folder (or its `bundle.json`), a run folder holding `bundle/` (what
`mlfactory train --out` makes), or an MLflow run id (32 hex digits) whose `bundle` artifact is
downloaded from the tracking store (`MLFLOW_TRACKING_URI`, default `sqlite:///mlruns.db`).
Only the run id needs MLflow, and it is imported only then.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlfactory.bundle import META_FILE, Bundle, load_bundle
from mlfactory.errors import BundleError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"


def resolve_bundle(target: str | Path) -> Bundle:
    """The bundle a target names (see the module docstring).

    Raises:
        BundleError: the target is none of these, the bundle is incomplete, or the MLflow run
            is unknown or has no bundle.
    """
    path = Path(target).expanduser()
    if (path / META_FILE).is_file() or path.name == META_FILE:
        return load_bundle(path)
    if (path / "bundle" / META_FILE).is_file():
        return load_bundle(path / "bundle")
    if path.is_dir() and (path / "model.onnx").is_file():
        return load_bundle(path)  # a bundle folder without bundle.json: load_bundle names it
    if path.exists():
        raise BundleError(f"{target} is neither a bundle folder nor a run folder with bundle/")
    if not RUN_ID.match(str(target)):
        raise BundleError(
            f"{target}: no such bundle folder or run folder, and not an MLflow run id "
            "(32 hex digits)"
        )
    return load_bundle(_download_run_bundle(str(target)))


def _download_run_bundle(run_id: str) -> Path:
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise BundleError(
            f"'{run_id}' looks like an MLflow run id; fetching its bundle needs MLflow "
            "(pip install 'mlfactory[train]'), or give the bundle folder"
        ) from None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle")
    except MlflowException as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError(f"MLflow run '{run_id}' has no bundle in {uri}: {reason}") from None
    return Path(local)
