"""The prediction log's database: opening it, and keeping its schema current.

`open_log_engine` opens the log at an SQLAlchemy URL (SQLite by default, in WAL mode: see
`prediction_log` for what a commit guarantees) and creates what it lacks: its tables, the
columns (`upgrade_schema`) and the indexes (`add_missing_indexes`) added since a log was first
written. Every worker, or replica, runs this on each start; all of it is safe to run at once.

A database server is given `REACH_TIMEOUT_S` to accept a connection (`connect_args`): one that
accepts the TCP connection and never answers (a firewall, a dead proxy) is an error within
seconds, not a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, Engine, Table, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError

from mlfactory.errors import ConfigError, first_line
from mlfactory.mlflow_store import REACH_TIMEOUT_S
from mlfactory.serving.log_tables import metadata, predictions

T = TypeVar("T")

log = logging.getLogger(__name__)
# Tries at creating a new log's tables while other workers may be creating them too (on
# PostgreSQL all but the first fail on a unique key of the catalog).
SCHEMA_ATTEMPTS = 5
# A SQLite file in WAL mode refuses at once a writer whose read snapshot is stale ("database is
# locked": its busy timeout does not apply), so workers creating a new log together can each be
# refused several times: those refusals are tried again for longer (about 7 s of waits).
LOCKED_ATTEMPTS = 20
SCHEMA_WAIT_S = 0.5
# Database drivers whose module is named otherwise than the package that pip installs.
DRIVER_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "mysql": "mysql-connector-python",  # mysql+mysqlconnector://
}
# How long a reader (`mlfactory monitor`, `report`, `collect`) waits for the answer to one query
# of a MySQL server or through pg8000 (the driver's read timeout; libpq has none).
READ_TIMEOUT_S = 300
# TCP keepalives (libpq): a server whose host vanished mid-query is given up after about 1 min.
LIBPQ_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=10000",  # first: switching to WAL waits for a lock too
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
)


def open_log_engine(url: str) -> Engine:
    """Open (and create, if needed) the log at an SQLAlchemy URL.

    Raises:
        ConfigError: the URL is invalid, its driver is not installed, or the database
            cannot be reached or written.
    """
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"MLFACTORY_LOG_URL: '{url}' is not an SQLAlchemy URL") from None
    shown = parsed.render_as_string(hide_password=True)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database in (None, "", ":memory:"):
        raise ConfigError(f"MLFACTORY_LOG_URL: '{shown}' is in memory; name a database file")
    try:
        if is_sqlite and parsed.database:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # A database server's connections die when it restarts or fails over: each one is
        # checked before use, so that the first predictions afterwards are not refused.
        engine = create_engine(
            parsed, pool_pre_ping=not is_sqlite, connect_args=connect_args(parsed)
        )
    except ImportError as exc:
        raise ConfigError(
            f"MLFACTORY_LOG_URL: the driver of '{shown}' is not installed "
            f"(pip install {driver_package(exc)})"
        ) from None
    except NoSuchModuleError:
        raise ConfigError(f"MLFACTORY_LOG_URL: '{shown}' names an unknown database") from None
    except OSError as exc:
        raise ConfigError(
            f"MLFACTORY_LOG_URL: cannot create the folder of '{shown}': {exc}"
        ) from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        _connect_once(engine)
        added, indexed = _create_schema(engine)
    except Exception as exc:
        engine.dispose()
        reason = first_line(getattr(exc, "orig", None) or exc)
        message = f"MLFACTORY_LOG_URL: cannot open the log at '{shown}': {reason}"
        raise ConfigError(message) from None
    if added:
        log.info("prediction log at %s: added column(s) %s", shown, ", ".join(added))
    if indexed:
        log.info("prediction log at %s: added index(es) %s", shown, ", ".join(indexed))
    return engine


def connect_args(url: URL, reading: bool = False) -> dict[str, Any]:
    """The arguments that bound how long the DB-API driver of `url` (`psycopg`, `mysqldb`...)
    waits for a database server: `REACH_TIMEOUT_S` to connect, and when `reading`,
    `READ_TIMEOUT_S` for each answer where the driver has a read timeout. An argument the URL's
    query sets is the URL's (`?connect_timeout=3`). Empty for SQLite or a driver not known."""
    defaults = _timeouts(url.get_driver_name(), reading)
    return {name: value for name, value in defaults.items() if name not in url.query}


def _timeouts(driver: str, reading: bool) -> dict[str, Any]:
    reach = int(REACH_TIMEOUT_S)
    if driver in ("psycopg", "psycopg2"):
        # No statement_timeout in the startup packet: poolers (PgBouncer) refuse `options`.
        return {"connect_timeout": reach, **LIBPQ_KEEPALIVES}
    if driver == "pg8000":  # one socket timeout, for connecting and each answer
        return {"timeout": READ_TIMEOUT_S if reading else reach}
    if driver in ("mysqldb", "pymysql", "mariadbconnector"):
        reads = {"read_timeout": READ_TIMEOUT_S} if reading else {}
        return {"connect_timeout": reach, **reads}
    if driver == "mysqlconnector":
        return {"connection_timeout": reach}
    return {}


def _connect_once(engine: Engine) -> None:
    """Connect once: a server that cannot be reached is not tried again. A new SQLite log's
    switch to WAL, which SQLite can refuse at once ("database is locked", its busy timeout
    unused) while other workers open the same file, is tried again after a short wait."""

    def connect() -> None:
        with engine.connect():
            pass

    _tried_again(connect, other_attempts=1)


def _create_schema(engine: Engine) -> tuple[list[str], list[str]]:
    """Create the log's missing tables, columns and indexes; returns the columns and indexes
    added to an existing log.

    Workers, or replicas, opening a new log at the same moment race to create them; on
    PostgreSQL every one but the first then fails on a unique key of the catalog. A failed
    attempt is repeated after a short wait, and finds what the first one created.
    """
    return _tried_again(lambda: _create_schema_once(engine), other_attempts=SCHEMA_ATTEMPTS)


def _tried_again(step: Callable[[], T], other_attempts: int) -> T:
    """`step()`, tried again after a short, growing wait when it fails with a database error:
    up to `LOCKED_ATTEMPTS` times in all while SQLite answers "database is locked", and
    `other_attempts` times for any other error."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return step()
        except DBAPIError as exc:
            locked = "database is locked" in str(exc.orig)
            if attempt >= (LOCKED_ATTEMPTS if locked else other_attempts):
                raise
            time.sleep(min(0.05 * attempt, SCHEMA_WAIT_S))


def _create_schema_once(engine: Engine) -> tuple[list[str], list[str]]:
    metadata.create_all(engine)
    return upgrade_schema(engine, predictions), add_missing_indexes(engine, predictions)


def upgrade_schema(engine: Engine, table: Table) -> list[str]:
    """Add the columns of `table` that an existing database table lacks (an additive upgrade).

    A log written by an older mlfactory keeps its rows: each missing column is added with
    `ALTER TABLE ... ADD COLUMN`, so old rows read it as NULL. Only nullable columns can be
    added this way; a new column must therefore be declared `nullable=True`. Safe to run on
    every start (it adds nothing when the table is current) and by several workers at once.

    Args:
        engine: the database.
        table: the table as this code declares it (it must exist: `create_all` first).

    Returns:
        The names of the columns added.

    Raises:
        ValueError: a missing column is not nullable (it cannot be added to existing rows).
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import OperationalError, ProgrammingError
    from sqlalchemy.schema import CreateColumn

    present = {column["name"] for column in inspect(engine).get_columns(table.name)}
    missing = [column for column in table.columns if column.name not in present]
    for column in missing:
        if not column.nullable:
            raise ValueError(
                f"table {table.name} lacks column {column.name}, which is not nullable: "
                "migrate it by hand"
            )
    added = []
    name = engine.dialect.identifier_preparer.format_table(table)
    for column in missing:
        ddl = CreateColumn(column).compile(dialect=engine.dialect)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {ddl}")
        except (OperationalError, ProgrammingError):
            # Another worker added it first ("duplicate column"): fine if it is there now.
            columns = {c["name"] for c in inspect(engine).get_columns(table.name)}
            if column.name not in columns:
                raise
            continue
        added.append(column.name)
    return added


def add_missing_indexes(engine: Engine, table: Table) -> list[str]:
    """Create the indexes of `table` that an existing database table lacks.

    `create_all` creates a table's indexes only with the table, so a log written by an older
    mlfactory gets a newer index here, once: on a large log that first start takes as long as
    the database needs to build it (the rows stay readable meanwhile; PostgreSQL holds new
    rows back until it is built). Safe on every start and by several workers at once.

    Args:
        engine: the database.
        table: the table as this code declares it (it must exist: `create_all` first).

    Returns:
        The names of the indexes created.
    """
    from sqlalchemy import inspect

    present = {index["name"] for index in inspect(engine).get_indexes(table.name)}
    created = []
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        if index.name in present:
            continue
        try:
            index.create(engine, checkfirst=True)
        except DBAPIError:
            # Another worker created it first ("already exists", or on PostgreSQL a unique key
            # of the catalog): fine if it is there now.
            if index.name not in {i["name"] for i in inspect(engine).get_indexes(table.name)}:
                raise
            continue
        created.append(str(index.name))
    return created


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def driver_package(exc: ImportError) -> str:
    """The pip package of the database driver that `exc` did not find (`MySQLdb`:
    `mysqlclient`), or `its driver` when the error names no module."""
    if not exc.name:
        return "its driver"
    module = exc.name.split(".")[0]
    return DRIVER_PACKAGES.get(module, module)


def database_reason(exc: Exception) -> str:
    """The first line of a database error, without SQLAlchemy's statement and parameters."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
