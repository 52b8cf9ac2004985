"""The MLflow store a command reaches: which one, whether it is there and answers, and why
its artifacts cannot be read when a download fails (`registry`, `tracking`, `train` and
`sweep` use it)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlfactory.artifact_stores import artifact_store_hint, missing_artifact_client
from mlfactory.errors import BundleError, ConfigError, cloud_storage_errors, first_line
from mlfactory.mlflow_reach import MLFLOW_TABLES as MLFLOW_TABLES
from mlfactory.mlflow_reach import REACH_TIMEOUT_S as REACH_TIMEOUT_S
from mlfactory.mlflow_reach import bound_mlflow_waits, foreign_database_problem, reachable
from mlfactory.mlflow_reach import hide_password as hide_password
from mlfactory.mlflow_reach import shown_url as shown_url
from mlfactory.sqlite_stores import foreign_sqlite_problem

if TYPE_CHECKING:
    from mlfactory.config.schema import TrackingConfig

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"


def tracking_uri(store: str | None = None) -> str:
    """The store a run id or a registered model is looked up in: `store` when given (a
    recipe's `tracking.tracking_uri`), else `MLFLOW_TRACKING_URI`, else the default."""
    return store or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def registry_uri(store: str | None = None) -> str:
    """The Model Registry's store: `MLFLOW_REGISTRY_URI` when set (as MLflow reads it), else
    the tracking store."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri(store)


def missing_sqlite_store(uri: str) -> str | None:
    """The file of a SQLite store URI that does not exist (None for any other store).

    MLflow creates an empty store for a SQLite file that is not there: a command run in
    another folder than its `mlruns.db` would then find nothing and leave an empty store.
    """
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database or ""
    return None if database and Path(database).expanduser().is_file() else database


def mlflow_client(store: str | None = None) -> tuple[Any, type[Exception]]:
    """An MlflowClient on `tracking_uri(store)` and the exception MLflow raises.

    Raises:
        BundleError: MLflow is not installed, or its server does not answer.
        ConfigError: MLflow cannot use the store (a plain path, which MLflow reads as its file
            store and refuses; a database that is no MLflow store: `check_sqlite_store`).
    """
    uri = tracking_uri(store)
    missing = missing_sqlite_store(uri)
    if missing is not None:
        raise BundleError(
            f"no MLflow store at {missing or uri} ({uri}): run the command where the store "
            "is, or set MLFLOW_TRACKING_URI to it"
        )
    named_by = "" if store else "MLFLOW_TRACKING_URI"
    check_sqlite_store(uri, named_by)
    registry = os.environ.get("MLFLOW_REGISTRY_URI") or ""
    missing = missing_sqlite_store(registry)
    if missing is not None:  # as for the store: MLflow would start an empty registry there
        raise BundleError(
            f"no MLflow registry at {missing or registry} (MLFLOW_REGISTRY_URI names it): run "
            "the command where it is, or create an empty file there to start a new registry"
        )
    if registry:
        check_sqlite_store(registry, "MLFLOW_REGISTRY_URI")
    reachable(uri)
    reachable(registry)
    bound_mlflow_waits(uri, registry)
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        raise BundleError(
            "the MLflow Model Registry needs MLflow (pip install 'mlfactory[train]'), or give "
            "the bundle folder"
        ) from None
    logging.getLogger("alembic").setLevel(logging.WARNING)  # an empty SQLite file's migrations
    try:
        # Not mlflow.set_tracking_uri: it also sets MLFLOW_TRACKING_URI in this process's
        # environment, and every later call without a store would then use this one.
        client = MlflowClient(tracking_uri=uri)
    except (MlflowException, SQLAlchemyError, OSError) as exc:  # a plain path: the file store
        raise ConfigError(_unusable(uri, named_by, first_line(exc))) from None
    return client, MlflowException


def check_sqlite_store(uri: str, named_by: str) -> None:
    """Refuse an existing SQLite file, or a PostgreSQL or MySQL database, that is not an MLflow
    store, before MLflow opens it: MLflow adds its tables to any database that lacks them (a
    database of something else would become a store), and a file that is no database at all is
    SQLAlchemy's traceback. An empty database is a new store, as a missing file is where the
    caller allows that (`missing_sqlite_store`).

    Raises:
        ConfigError: the file cannot be read as a SQLite database, or the database holds other
            tables.
        BundleError: a PostgreSQL or MySQL database does not answer (`database_tables`).
    """
    problem = foreign_sqlite_problem(uri, MLFLOW_TABLES, "an MLflow store")
    problem = problem or foreign_database_problem(uri)
    if problem is not None:
        raise ConfigError(_unusable(uri, named_by, problem))


def check_sqlite_place(uri: str) -> None:
    """Refuse a SQLite tracking store a run could not keep, before any data is prepared: an
    in-memory one (the run's id would name a run no store holds once the process ends), a path
    that is a folder, or a file that is not there in a folder that is missing or not writable
    (SQLite fails after the data, and MLflow retries it for minutes). A missing folder is
    made by MLflow, as its file is.

    Raises:
        ConfigError: naming the URI and, for a missing file, its folder.
    """
    if not uri.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url

    database = make_url(uri).database or ""
    key = f"tracking.tracking_uri={uri}"
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise ConfigError(
            f"{key} is an in-memory SQLite store, which keeps no run once the command ends: "
            f"give a file ({DEFAULT_TRACKING_URI})"
        )
    path = Path(database).expanduser()
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a folder: name a file in it ({path / 'mlruns.db'})")
    if path.exists():
        return
    # MLflow makes the folders of a new store: the nearest one there has to be writable.
    folder = next(p for p in path.absolute().parents if p.exists() or p == Path(p.anchor))
    if not folder.is_dir():
        raise ConfigError(
            f"{key}: {folder} is a file, so the store's folder {path.parent} cannot be made: "
            "choose another"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}: the folder {folder} is not writable, so the store cannot be created there: "
            "choose another folder"
        )


def _unusable(uri: str, named_by: str, reason: str) -> str:
    """One line: the store `uri` cannot be used, why, and the variable that names it."""
    hint = f" ({named_by} names the store)" if named_by else ""
    return hide_password(f"the MLflow store {uri} cannot be used: {reason}{hint}", uri)


def check_tracking_store(config: TrackingConfig, owner: bool = True) -> None:
    """The tracking store answers and MLflow can use it, checked before the data is prepared:
    a wrong `tracking.tracking_uri` is one line at once, not a traceback after the data (or
    minutes of MLflow's retries). Only in the process that owns the run (`owner`: the only
    one, or rank 0 of a distributed job).

    A SQLite store that is not there yet is left for the run to create, as before: nothing to
    reach, and a run stopped by its data leaves no empty store behind.

    Where the run's artifacts will go is known here when the experiment exists (its artifact
    location) or `tracking.artifact_location` names it: a bucket whose client library is not
    installed is refused now, not after the training stack's imports. A location the server
    chooses (its default artifact root) is checked when the run starts.

    Raises:
        ConfigError: the store does not answer, MLflow cannot use it, or the run's artifacts
            would go to a bucket whose client library is not installed.
    """
    if not owner:
        return
    check_sqlite_place(config.tracking_uri)
    root, named_by = config.artifact_location, " (tracking.artifact_location)"
    if missing_sqlite_store(config.tracking_uri) is None:
        _, experiment = _client_and_experiment(config)
        if experiment is not None:
            root, named_by = experiment.artifact_location, ""
    missing = missing_artifact_client(root or "", "written")
    if missing is not None:
        raise ConfigError(f"tracking: experiment '{config.experiment}'{named_by}: {missing}")


def tracking_client(config: TrackingConfig) -> Any:
    """An MlflowClient on the store a run is tracked in (`tracking.tracking_uri`), once the
    store has answered: `train` and `sweep` check it before the data is prepared.

    A server that does not answer is refused within `REACH_TIMEOUT_S` (`reachable`, as for
    `register`), not after MLflow's retries; a URI MLflow cannot use (a plain path, which
    MLflow reads as its file store and refuses; an unknown scheme; a database it cannot
    reach) with the first line of MLflow's reason. A SQLite store that is not there is
    created, as the run would create it.

    Raises:
        ConfigError: the store does not answer or MLflow cannot use it.
    """
    client, _ = _client_and_experiment(config)
    return client


def _client_and_experiment(config: TrackingConfig) -> tuple[Any, Any]:
    """`tracking_client`, and the run's experiment as the store holds it (None when it does
    not exist yet): reading it is how the store is seen to answer."""
    uri = config.tracking_uri
    check_sqlite_place(uri)
    try:
        reachable(uri)
    except BundleError as exc:
        raise ConfigError(f"tracking.tracking_uri: {hide_password(str(exc), uri)}") from None
    check_sqlite_store(uri, "tracking.tracking_uri")
    bound_mlflow_waits(uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from sqlalchemy.exc import SQLAlchemyError

    logging.getLogger("alembic").setLevel(logging.WARNING)  # a new SQLite store's migrations
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(config.experiment)
    except (MlflowException, SQLAlchemyError, ImportError, OSError) as exc:
        reason = f"tracking.tracking_uri={uri} cannot be used: {first_line(exc)}"
        raise ConfigError(hide_password(reason, uri)) from None
    return client, experiment


def missing_client(
    client: Any, run_id: str | None, mlflow_error: type[Exception], exc: ImportError
) -> str:
    """Why a download failed on an import: the run's artifact store needs a client library
    that is not installed, and the command that installs it."""
    root = ""
    if run_id is not None:
        with contextlib.suppress(mlflow_error):
            root = client.get_run(run_id).info.artifact_uri
    missing = missing_artifact_client(root) if root else None
    if missing is not None:
        return missing
    module = exc.name or first_line(exc)
    where = f"its artifacts at {root}" if root else "its artifact store"
    return f"{where} need {module} to be read, which is not installed: install the package with it"


def unreadable_artifacts(
    client: Any, run_id: str | None, mlflow_error: type[Exception]
) -> str | None:
    """Why the run's artifact store cannot be read, when that is why a download failed; None
    when it can be read (the bundle is not there) or the run is not found.

    MLflow reports any failure to download a run's artifacts as a wrong path; listing the
    artifact root raises the storage client's own error: an S3 endpoint that cannot be reached,
    missing credentials, a bucket that refuses, an MLflow server that cannot reach its store.
    """
    import mlflow

    if run_id is None:
        return None
    try:
        root = client.get_run(run_id).info.artifact_uri
    except mlflow_error:  # no such run: the caller's message says so
        return None
    storage_errors: tuple[type[Exception], ...] = (OSError, *cloud_storage_errors())
    try:
        mlflow.artifacts.list_artifacts(artifact_uri=root)
    except ImportError as exc:  # e.g. MLflow reports a missing boto3 as a failed download
        return missing_client(client, run_id, mlflow_error, exc)
    except storage_errors as exc:
        return (
            f"its artifacts at {root} cannot be read: {type(exc).__name__}: {first_line(exc)} "
            f"({artifact_store_hint(root)})"
        )
    except mlflow_error:  # MLflow's own refusal, not the storage's
        return None
    return None
