"""Bundles in MLflow: a run's bundle artifact, and the Model Registry (register, alias, fetch).

A registered version is the `bundle` artifact of the MLflow run that trained it (source
`runs:/<run id>/bundle`); the registry keeps no copy of its own. The store is the one
`MLFLOW_TRACKING_URI` names (default `sqlite:///mlruns.db`), or `MLFLOW_REGISTRY_URI` when set,
as MLflow reads them. Every command that takes a target (`predict`, `serve`, `evaluate`,
`monitor`, `report`, `fetch`) takes `models:/NAME/VERSION`, `models:/NAME@ALIAS` or
`models:/NAME/latest` (the highest version).

Each version is tagged with the bundle's digest (sha256 over its files) when it is registered.
A run's bundle artifact can be logged again later (`mlfactory profile` does), which would
change what the version serves under the same number: fetching it checks the digest and refuses
a bundle that is not the one registered.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlfactory.bundle import META_FILE, Bundle
from mlfactory.errors import BundleError
from mlfactory.mlflow_store import (
    missing_client,
    mlflow_client,
    registry_uri,
    shown_url,
    tracking_uri,
    unreadable_artifacts,
)
from mlfactory.output import quiet_downloads
from mlfactory.registry_reasons import missing_in_registry, mlflow_reason, name_filter
from mlfactory.termination import exit_on_sigterm

BUNDLE_ARTIFACT = "bundle"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[^/@]+))$")
DIGEST_TAG = "mlfactory.bundle_sha256"
# MLflow's error codes for a model or version it does not hold, and for an alias.
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
# Tags that say what a version is, beside the digest (shown by `mlflow ui` on the version).
BUNDLE_VERSION_TAG = "mlfactory.bundle_version"
FINGERPRINT_TAG = "mlfactory.data_fingerprint"
# The bundle's test metrics (bundle.json) as tags, to compare versions before moving an alias.
METRIC_TAGS = {"accuracy": "mlfactory.test_accuracy", "f1_macro": "mlfactory.test_macro_f1"}


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model.

    Attributes:
        name: the registered model's name.
        version: its version number in the registry.
        aliases: the aliases that point at it.
        run_id: the MLflow run whose bundle artifact it is.
        digest: the bundle's sha256 when it was registered (None: not registered by mlfactory).
        source: where its files are, as registered (`runs:/<run id>/bundle`).
    """

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    digest: str | None
    source: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def is_model_uri(target: str) -> bool:
    return target.startswith("models:/")


def bundle_digest(folder: Path) -> str:
    """sha256 over every file of a bundle folder: its relative path, then its bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def register_bundle(
    bundle: Bundle,
    name: str | None = None,
    aliases: Sequence[str] = (),
    store: str | None = None,
) -> tuple[RegisteredVersion, bool]:
    """The version of the registered model `name` (default the bundle's name) that is the
    bundle artifact of the run that trained `bundle`, which must be the same files as
    `bundle`: a new version, or the one registered with the same files before (registering
    twice makes no second version). `aliases` point at it.

    Returns:
        The version, and whether it is new.

    Raises:
        BundleError: the bundle has no MLflow run, the store does not hold the run or its
            bundle artifact, the artifact differs from `bundle`, or MLflow refuses a name or
            an alias. A name is refused before anything is written; an alias MLflow refuses
            once the version is registered says so, and the command that sets it.
    """
    model, run_id = _registrable(bundle, name)
    client, mlflow_error = mlflow_client(store)
    check_aliases(aliases, mlflow_error)
    local = bundle_digest(bundle.path)
    if _run_bundle_digest(run_id, store) != local:
        raise BundleError(
            f"the bundle logged to MLflow run {run_id} is not the same as {bundle.path} (a file "
            "was changed or added after it was logged): register the run id to register what "
            "MLflow holds, or `mlfactory profile` the folder to log it again"
        )
    where = registry_uri(store)
    try:
        _create_model(client, model, mlflow_error)
        number, new = _version_of(client, model, run_id, _tags(bundle, local))
    except mlflow_error as exc:
        reason = mlflow_reason(exc, where)
        raise BundleError(f"MLflow refused to register '{model}': {reason}") from None
    uri = f"models:/{model}/{number}"
    for done, alias in enumerate(aliases):
        try:
            client.set_registered_model_alias(model, alias, number)
        except mlflow_error as exc:
            left = aliases[done:]
            flags = " ".join(f"--alias {a}" for a in left)
            raise BundleError(
                f"{'registered' if new else 'already registered'} as {uri}, but the "
                f"alias{'es' * (len(left) > 1)} {', '.join(repr(a) for a in left)} "
                f"{'were' if len(left) > 1 else 'was'} not set: {mlflow_reason(exc, where)}; "
                f"set {'them' if len(left) > 1 else 'it'} with: mlfactory register "
                f"{shlex.quote(uri)} {flags}"
            ) from None
    return find_version(uri, store), new


def _registrable(bundle: Bundle, name: str | None) -> tuple[str, str]:
    """The registered model's name `register_bundle` uses and the bundle's run id, once both are
    known to be usable: before anything is written to the registry.

    Raises:
        BundleError: the bundle has no MLflow run, or the name is one MLflow cannot look up.
    """
    run_id = bundle.meta.mlflow_run_id
    if not run_id:
        raise BundleError(
            f"{bundle.path} has no MLflow run (bundle.json: mlflow_run_id); only a bundle that "
            "mlfactory train logged can be registered"
        )
    if name is not None and not name.strip():
        raise BundleError("--name is empty: give the registered model's name, or leave it out")
    model = name or bundle.meta.name
    if MODEL_URI.match(f"models:/{model}/1") is None:
        raise BundleError(
            f"registered model name '{model}': use one without '/' or '@', which "
            "models:/NAME@ALIAS could not name"
        )
    name_filter(model)  # a name no filter can look up: refused before it is created
    return model, run_id


def _tags(bundle: Bundle, digest: str) -> dict[str, str]:
    """The tags of a new version of `bundle`: its digest, version, data and test metrics."""
    tags = {
        DIGEST_TAG: digest,
        BUNDLE_VERSION_TAG: bundle.meta.version,
        FINGERPRINT_TAG: bundle.meta.data_fingerprint or "",
    }
    test = bundle.meta.metrics.get("test") or {}
    return tags | {tag: f"{test[key]:.4f}" for key, tag in METRIC_TAGS.items() if key in test}


def _version_of(client: Any, model: str, run_id: str, tags: dict[str, str]) -> tuple[str, bool]:
    """The version number of `model` registered with the digest in `tags` (the lowest), or of
    a new version of the run's bundle; and whether it is new."""
    versions = client.search_model_versions(filter_string=name_filter(model))
    same = [v for v in versions if (v.tags or {}).get(DIGEST_TAG) == tags[DIGEST_TAG]]
    if same:
        return str(min(int(v.version) for v in same)), False
    source = f"runs:/{run_id}/{BUNDLE_ARTIFACT}"
    created = client.create_model_version(model, source, run_id=run_id, tags=tags)
    return str(created.version), True


def check_aliases(aliases: Sequence[str], mlflow_error: type[Exception]) -> None:
    """MLflow's own rules for an alias (the ones its store applies), before anything is
    written: refused after the new version, an alias would leave a version registered without
    the aliases asked for, or only some of them set.

    Raises:
        BundleError: MLflow would refuse one of `aliases`; nothing was registered or moved.
    """
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
    )

    for alias in aliases:
        try:
            _validate_model_alias_name(alias)
            _validate_model_alias_name_reserved(alias)
        except mlflow_error as exc:
            raise BundleError(
                f"--alias {alias!r}: MLflow refuses it: {mlflow_reason(exc)}; nothing was changed"
            ) from None


def _create_model(client: Any, name: str, mlflow_error: type[Exception]) -> None:
    """Create the registered model `name` unless it exists (as `mlflow.register_model` does:
    another registration may create it at the same moment)."""
    try:
        client.create_registered_model(name)
    except mlflow_error as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise


def set_aliases(uri: str, aliases: Sequence[str]) -> RegisteredVersion:
    """Point `aliases` at the registered version `uri` names (promote it, roll back to it)."""
    version = find_version(uri)
    client, mlflow_error = mlflow_client()
    check_aliases(aliases, mlflow_error)
    try:
        for alias in aliases:
            client.set_registered_model_alias(version.name, alias, version.version)
    except mlflow_error as exc:
        raise BundleError(
            f"MLflow refused the alias: {mlflow_reason(exc, registry_uri())}"
        ) from None
    return find_version(version.uri)


def find_version(uri: str, store: str | None = None) -> RegisteredVersion:
    """The registered version a `models:/` URI names.

    Raises:
        BundleError: the URI is malformed, or the store holds no such model, version or alias.
    """
    match = MODEL_URI.match(uri)
    if match is None:
        raise BundleError(
            f"'{uri}' is not a registered model: write models:/NAME/VERSION, models:/NAME@ALIAS "
            "or models:/NAME/latest"
        )
    client, mlflow_error = mlflow_client(store)
    name, number, alias = match["name"], match["version"], match["alias"]
    try:
        if alias is not None:
            found = client.get_model_version_by_alias(name, alias)
        elif number == "latest":
            versions = client.search_model_versions(filter_string=name_filter(name))
            if not versions:
                missing = missing_in_registry(client, name, None, number, mlflow_error)
                raise BundleError(f"{uri}: {missing} in {shown_url(registry_uri(store))}")
            found = max(versions, key=lambda v: int(v.version))
        else:
            found = client.get_model_version(name, number)
    except mlflow_error as exc:
        if getattr(exc, "error_code", None) in NOT_FOUND:
            reason = missing_in_registry(client, name, alias, number, mlflow_error)
        else:
            reason = mlflow_reason(exc, registry_uri(store))
        raise BundleError(f"{uri}: {reason} in {shown_url(registry_uri(store))}") from None
    return _version(found)


def download_registered(uri: str, destination: Path) -> Path:
    """The bundle folder of a registered version, fetched into `destination` (an empty folder;
    `targets.resolve_bundle` makes it and removes it) and checked against the digest it was
    registered with."""
    import mlflow

    version = find_version(uri)
    client, mlflow_error = mlflow_client()
    try:
        # Where the version's files are (the run's `bundle` folder), asked of this registry:
        # MLflow resolves a models:/ URI against its process-wide registry URI only.
        source = client.get_model_version_download_uri(version.name, version.version)
        with quiet_downloads():
            folder = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(destination), tracking_uri=tracking_uri(None)
                )
            )
    except ImportError as exc:
        reason = missing_client(client, version.run_id, mlflow_error, exc)
        raise BundleError(f"{uri}: its bundle cannot be fetched: {reason}") from None
    except mlflow_error as exc:
        unreadable = unreadable_artifacts(client, version.run_id, mlflow_error)
        reason = unreadable or mlflow_reason(exc, tracking_uri(None), registry_uri())
        raise BundleError(f"{uri}: its bundle cannot be fetched: {reason}") from None
    if not (folder / META_FILE).is_file():
        raise BundleError(
            f"{uri}: its source {version.source or source} is not an mlfactory bundle (no "
            f"{META_FILE}): register the run's bundle with `mlfactory register RUN_ID`"
        )
    if version.digest is not None and bundle_digest(folder) != version.digest:
        raise BundleError(
            f"{uri} (version {version.version}): the bundle of MLflow run {version.run_id} has "
            "changed since it was registered (logged again, e.g. by `mlfactory profile`): "
            "register the run again to make the new bundle a version of its own"
        )
    return folder


def download_run_bundle(
    run_id: str, destination: Path | None = None, store: str | None = None
) -> Path:
    """The `bundle` artifact of an MLflow run, fetched into `destination` (default: a new
    temporary folder, the caller's to remove)."""
    import mlflow

    client, mlflow_error = mlflow_client(store)
    try:
        with quiet_downloads():
            folder = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=BUNDLE_ARTIFACT,
                dst_path=None if destination is None else str(destination),
                tracking_uri=tracking_uri(store),
            )
    except ImportError as exc:
        reason = missing_client(client, run_id, mlflow_error, exc)
        raise BundleError(f"MLflow run '{run_id}': {reason}") from None
    except mlflow_error as exc:
        reason = _no_bundle(client, run_id, store, mlflow_error, exc)
        raise BundleError(f"MLflow run '{run_id}' {reason}") from None
    return Path(folder)


def _no_bundle(
    client: Any, run_id: str, store: str | None, mlflow_error: type[Exception], exc: Exception
) -> str:
    """Why the run's bundle could not be downloaded: its artifacts cannot be read, the store
    has no such run or refuses to say, or the run has no bundle artifact."""
    unreadable = unreadable_artifacts(client, run_id, mlflow_error)
    if unreadable is not None:
        return unreadable
    uri, named_by = tracking_uri(store), "" if store else " (MLFLOW_TRACKING_URI names it)"
    try:
        client.get_run(run_id)
    except mlflow_error as failed:
        if getattr(failed, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return f"is not in the store {shown_url(uri)}{named_by}: check the run id and store"
        return f"cannot be read from {shown_url(uri)}{named_by}: {mlflow_reason(failed, uri)}"
    return f"has no bundle in {shown_url(uri)}{named_by}: {mlflow_reason(exc, uri)}"


def _run_bundle_digest(run_id: str, store: str | None) -> str:
    exit_on_sigterm()  # the download is removed when a SIGTERM stops it too
    with tempfile.TemporaryDirectory(prefix="mlfactory-register-") as tmp:
        return bundle_digest(download_run_bundle(run_id, Path(tmp), store))


def _version(found: Any) -> RegisteredVersion:
    return RegisteredVersion(
        name=str(found.name),
        version=str(found.version),
        aliases=tuple(getattr(found, "aliases", None) or ()),
        run_id=found.run_id or None,
        digest=(found.tags or {}).get(DIGEST_TAG),
        source=getattr(found, "source", None) or None,
    )
