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
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlfactory.bundle import Bundle
from mlfactory.errors import BundleError, first_line
from mlfactory.mlflow_store import (
    missing_client,
    mlflow_client,
    registry_uri,
    tracking_uri,
    unreadable_artifacts,
)
from mlfactory.output import quiet_downloads

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
    """

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    digest: str | None

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
            an alias.
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
    client, mlflow_error = mlflow_client(store)
    check_aliases(aliases, mlflow_error)
    local = bundle_digest(bundle.path)
    logged = _run_bundle_digest(run_id, store)
    if logged != local:
        raise BundleError(
            f"the bundle logged to MLflow run {run_id} is not the same as {bundle.path} (a file "
            "was changed or added after it was logged): register the run id to register what "
            "MLflow holds, or `mlfactory profile` the folder to log it again"
        )
    tags = {
        DIGEST_TAG: local,
        BUNDLE_VERSION_TAG: bundle.meta.version,
        FINGERPRINT_TAG: bundle.meta.data_fingerprint or "",
    }
    test = bundle.meta.metrics.get("test") or {}
    tags |= {tag: f"{test[key]:.4f}" for key, tag in METRIC_TAGS.items() if key in test}
    try:
        _create_model(client, model, mlflow_error)
        versions = client.search_model_versions(filter_string=_name_filter(model))
        same = [v for v in versions if (v.tags or {}).get(DIGEST_TAG) == local]
        if same:
            number, new = str(min(int(v.version) for v in same)), False
        else:
            source = f"runs:/{run_id}/{BUNDLE_ARTIFACT}"
            created = client.create_model_version(model, source, run_id=run_id, tags=tags)
            number, new = str(created.version), True
        for alias in aliases:
            client.set_registered_model_alias(model, alias, number)
    except mlflow_error as exc:
        raise BundleError(f"MLflow refused to register '{model}': {first_line(exc)}") from None
    return find_version(f"models:/{model}/{number}", store), new


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
                f"--alias {alias!r}: MLflow refuses it: {first_line(exc)}; nothing was changed"
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
        raise BundleError(f"MLflow refused the alias: {first_line(exc)}") from None
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
            versions = client.search_model_versions(filter_string=_name_filter(name))
            if not versions:
                missing = _what_is_missing(client, name, None, number, mlflow_error)
                raise BundleError(f"{uri}: {missing} in {registry_uri(store)}")
            found = max(versions, key=lambda v: int(v.version))
        else:
            found = client.get_model_version(name, number)
    except mlflow_error as exc:
        if getattr(exc, "error_code", None) in NOT_FOUND:
            reason = _what_is_missing(client, name, alias, number, mlflow_error)
        else:
            reason = first_line(exc)
        raise BundleError(f"{uri}: {reason} in {registry_uri(store)}") from None
    return _version(found)


def _what_is_missing(
    client: Any, name: str, alias: str | None, number: str | None, mlflow_error: type[Exception]
) -> str:
    """What a `models:/` URI names that the store lacks, with what the store holds instead
    (MLflow says "Registered model alias champion not found." and no more), or just what it
    lacks when the store cannot be asked."""
    try:
        model = client.get_registered_model(name)
    except mlflow_error:
        try:
            names = sorted(m.name for m in client.search_registered_models(max_results=6))
        except mlflow_error:
            return f"no registered model '{name}'"
        there = f"registered: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
        return f"no registered model '{name}' ({there if names else 'none registered yet'})"
    if alias is not None:
        aliases = sorted((model.aliases or {}).items())
        held = ", ".join(f"{a} -> version {v}" for a, v in aliases) or "none"
        return (
            f"model '{name}' has no alias '{alias}' (its aliases: {held}; mlfactory register "
            f"models:/{name}/VERSION --alias {alias} sets it)"
        )
    if number == "latest":  # asked only when the model has no version
        return f"model '{name}' has no version yet"
    try:
        numbers = sorted(int(v.version) for v in client.search_model_versions(_name_filter(name)))
    except (mlflow_error, BundleError):
        return f"model '{name}' has no version {number}"
    shown = ", ".join(str(n) for n in numbers[-5:])
    held = f"version{'s' * (len(numbers) > 1)} {'..., ' * (len(numbers) > 5)}{shown}"
    return f"model '{name}' has no version {number} (it has {held if numbers else 'none'})"


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
        reason = unreadable_artifacts(client, version.run_id, mlflow_error) or first_line(exc)
        raise BundleError(f"{uri}: its bundle cannot be fetched: {reason}") from None
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
        unreadable = unreadable_artifacts(client, run_id, mlflow_error)
        if unreadable is not None:
            raise BundleError(f"MLflow run '{run_id}': {unreadable}") from None
        raise BundleError(
            f"MLflow run '{run_id}' has no bundle in {tracking_uri(store)}: {first_line(exc)} "
            "(MLFLOW_TRACKING_URI names the store)"
        ) from None
    return Path(folder)


def _run_bundle_digest(run_id: str, store: str | None) -> str:
    with tempfile.TemporaryDirectory(prefix="mlfactory-register-") as tmp:
        return bundle_digest(download_run_bundle(run_id, Path(tmp), store))


def _version(found: Any) -> RegisteredVersion:
    return RegisteredVersion(
        name=str(found.name),
        version=str(found.version),
        aliases=tuple(getattr(found, "aliases", None) or ()),
        run_id=found.run_id or None,
        digest=(found.tags or {}).get(DIGEST_TAG),
    )


def _name_filter(name: str) -> str:
    """An MLflow filter on one registered model name (its grammar has no escapes: the quote
    the name lacks; a name with both quotes cannot be looked up by filter)."""
    quote = next((q for q in ("'", '"') if q not in name), None)
    if quote is None:
        raise BundleError(f"registered model name {name!r}: use a name without both kinds of quote")
    return f"name = {quote}{name}{quote}"
