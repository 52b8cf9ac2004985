"""One worker at a time sets a study up: workers started together on one storage would each
create the storage's tables, the MLflow store's tables, the study's `sweep_id` and its MLflow
run (each reads "none yet", then writes its own).

`study_setup_lock` serializes that set-up between the workers of one study: a PostgreSQL
advisory lock (or MySQL's `GET_LOCK`) on the storage's server, held by a connection of its own,
which the server releases if the worker dies; for a SQLite storage, which only workers on one
machine share, a file lock on the folder of the SQLite file. Where no lock can be taken (a
server that does not answer: opening the storage then says so) the set-up goes on without one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from typing import Any

from mlfactory.errors import ConfigError

# How long a worker waits for another one to finish setting the study up (seconds).
LOCK_WAIT_S = 300.0


@contextlib.contextmanager
def study_setup_lock(storage: str, study: str) -> Iterator[None]:
    """Hold the set-up lock of the study `study` in `storage` (a SQLAlchemy URL) in the block.

    Raises:
        ConfigError: another worker held it for `LOCK_WAIT_S`.
    """
    if storage.startswith("sqlite:///"):
        with _folder_lock(storage.removeprefix("sqlite:///"), study):
            yield
        return
    with _server_lock(storage, study):
        yield


def lock_key(study: str) -> int:
    """A 64-bit signed number for the study's name, as `pg_advisory_lock` takes it."""
    digest = hashlib.sha256(f"mlfactory-sweep:{study}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def _folder_lock(database: str, study: str) -> Iterator[None]:
    folder = os.path.dirname(os.path.abspath(database)) if database else ""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # no such folder: opening the storage says so
        yield
        return
    try:
        _wait(lambda: _try_flock(descriptor), study)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def _server_lock(storage: str, study: str) -> Iterator[None]:
    connection = _connection(storage)
    if connection is None:
        yield
        return
    key, mysql = lock_key(study), connection.dialect.name == "mysql"
    try:
        from sqlalchemy import text

        if mysql:
            take = text("SELECT GET_LOCK(:name, 0)").bindparams(name=str(key))
        elif connection.dialect.name == "postgresql":
            take = text("SELECT pg_try_advisory_lock(:key)").bindparams(key=key)
        else:
            yield
            return
        _wait(lambda: bool(connection.execute(take).scalar()), study)
        yield
    finally:
        connection.close()  # the server releases the lock with its session
        connection.engine.dispose()


def _connection(storage: str) -> Any:
    """A connection of its own to the storage's server, or None where there is none to have."""
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from mlfactory.serving.log_database import connect_args  # each driver's connect timeout

    try:
        url = make_url(storage)
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args(url))
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except (SQLAlchemyError, ImportError, ValueError, TypeError):
        return None


def _wait(take: Any, study: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while not take():
        if time.monotonic() > deadline:
            raise ConfigError(
                f"another worker has been setting the study '{study}' up for "
                f"{LOCK_WAIT_S:.0f} s: check it, then start this one again"
            )
        time.sleep(0.2)
