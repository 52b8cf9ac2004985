"""What the commands accept as a model: a bundle, a run folder, a run id, a registered model.

A target is a bundle folder (or its `bundle.json`), a run folder holding `bundle/` (what
`mlfactory train --out` makes), an MLflow run id (32 hex digits) whose `bundle` artifact is
downloaded from the tracking store (`MLFLOW_TRACKING_URI`, default `sqlite:///mlruns.db`), or a
version of a registered model (`models:/NAME/VERSION`, `models:/NAME@ALIAS`,
`models:/NAME/latest`; `registry.py`). Only the last two need MLflow, imported only then.

The last two are fetched into a temporary folder of their own, which lasts as long as the
command: `downloads_removed` removes the folders fetched within it (a command's function), and
those left when the process ends are removed then (a CLI command is one process), also when it
is stopped by SIGTERM (`termination.exit_on_sigterm`).
`fetched_from` says which store (and run) such a bundle came from: what a command writes into
it is kept only by logging it back there.
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlfactory.bundle import META_FILE, Bundle, load_bundle
from mlfactory.errors import BundleError
from mlfactory.mlflow_store import tracking_uri
from mlfactory.paths import is_within
from mlfactory.registry import download_registered, download_run_bundle, is_model_uri
from mlfactory.termination import exit_on_sigterm

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# The temporary folders `resolve_bundle` fetched bundles into and that are still there.
_downloads: list[Path] = []
# Where each of those came from: the tracking URI of its store and the run id it was fetched
# by (None for a registered version: the bundle's own run).
_origins: dict[Path, tuple[str, str | None]] = {}


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
    store = tracking_uri(None)
    if is_model_uri(str(target)):
        # download_registered reads the version's artifacts there
        return _fetched(lambda folder: download_registered(str(target), folder), (store, None))
    if not RUN_ID.match(str(target)):
        raise BundleError(
            f"{target}: no such bundle folder or run folder, not an MLflow run id (32 hex "
            "digits) and not a registered model (models:/NAME/VERSION or models:/NAME@ALIAS)"
        )
    return _fetched(lambda folder: download_run_bundle(str(target), folder), (store, str(target)))


def fetched_from(bundle: Bundle) -> tuple[str, str | None] | None:
    """Where `resolve_bundle` fetched `bundle` from into a temporary folder: the tracking URI
    of the MLflow store and the run id it was fetched by (None for a registered version); None
    for a bundle on disk, which is its own."""
    for folder, origin in _origins.items():
        if is_within(bundle.path, folder):
            return origin
    return None


@contextmanager
def downloads_removed() -> Iterator[None]:
    """The temporary folders `resolve_bundle` fetches bundles into within this, removed on exit
    (the bundles it returned are gone then; their `meta` is still read)."""
    start = len(_downloads)
    try:
        yield
    finally:
        _remove_downloads(start)


def _fetched(fetch: Callable[[Path], Path], origin: tuple[str, str | None]) -> Bundle:
    """The bundle `fetch` downloads from `origin` (`fetched_from`) into a new temporary folder
    (its own: commands write beside the bundle), which is removed by `downloads_removed` or at
    exit, at once when it fails."""
    exit_on_sigterm()
    folder = Path(tempfile.mkdtemp(prefix="mlfactory-model-"))
    _downloads.append(folder)
    _origins[folder] = origin
    try:
        return load_bundle(fetch(folder))
    except BaseException:
        _downloads.remove(folder)
        _origins.pop(folder, None)
        shutil.rmtree(folder, ignore_errors=True)
        raise


@atexit.register
def _remove_downloads(start: int = 0) -> None:
    while len(_downloads) > start:
        folder = _downloads.pop()
        _origins.pop(folder, None)
        shutil.rmtree(folder, ignore_errors=True)


def names_a_bundle(target: str) -> bool:
    """Whether `target` has a bundle target's form (an existing folder or `bundle.json`, an MLflow
    run id, a `models:/` URI), without loading anything: `resolve_bundle` says if it is one."""
    path = Path(target).expanduser()
    is_meta = path.name == META_FILE and path.is_file()
    return path.is_dir() or is_meta or is_model_uri(target) or bool(RUN_ID.match(target))
