"""What the commands accept as a model: a bundle, a run folder, a run id, a registered model.

A target is a bundle folder (or its `bundle.json`), a run folder holding `bundle/` (what
`mlfactory train --out` makes), an MLflow run id (32 hex digits) whose `bundle` artifact is
downloaded from the tracking store (`MLFLOW_TRACKING_URI`, default `sqlite:///mlruns.db`), or a
version of a registered model (`models:/NAME/VERSION`, `models:/NAME@ALIAS`,
`models:/NAME/latest`; `registry.py`). Only the last two need MLflow, imported only then.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlfactory.bundle import META_FILE, Bundle, load_bundle
from mlfactory.errors import BundleError
from mlfactory.registry import download_registered, download_run_bundle, is_model_uri

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


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
    if is_model_uri(str(target)):
        return load_bundle(download_registered(str(target)))
    if not RUN_ID.match(str(target)):
        raise BundleError(
            f"{target}: no such bundle folder or run folder, not an MLflow run id (32 hex "
            "digits) and not a registered model (models:/NAME/VERSION or models:/NAME@ALIAS)"
        )
    return load_bundle(download_run_bundle(str(target)))


def names_a_bundle(target: str) -> bool:
    """Whether `target` has a bundle target's form (an existing folder or `bundle.json`, an MLflow
    run id, a `models:/` URI), without loading anything: `resolve_bundle` says if it is one."""
    path = Path(target).expanduser()
    is_meta = path.name == META_FILE and path.is_file()
    return path.is_dir() or is_meta or is_model_uri(target) or bool(RUN_ID.match(target))


def is_download(target: str) -> bool:
    """Whether `resolve_bundle` fetches `target` (a run id, a `models:/` URI) into a temporary
    folder of its own, the bundle folder's parent, rather than reading a local folder."""
    return not Path(target).expanduser().exists() and (
        is_model_uri(target) or bool(RUN_ID.match(target))
    )
