"""A real, throw-away PostgreSQL server for tests: Debian's initdb and pg_ctl on a free loopback
port, in a temporary folder, stopped and deleted afterwards.

PostgreSQL refuses to run as root, so under root the server runs as the `postgres` system user.
Use it as a fixture: `from tests.postgres import postgres_url  # noqa: F401`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlfactory.serving.process import free_port

# Debian and Ubuntu keep each major version's server binaries apart; the newest one is used.
INSTALLED = sorted(
    Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
)
BIN = INSTALLED[-1].parent if INSTALLED else Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 60


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str]) -> None:
    subprocess.run(
        _as_server_user(command), check=True, capture_output=True, timeout=START_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL (psycopg) of a fresh database on a local PostgreSQL server."""
    if not (BIN / "initdb").is_file():
        pytest.fail(f"PostgreSQL server binaries not found in {BIN} (apt-get install postgresql)")
    # Under /tmp itself: pytest's own temporary folders are closed to other users.
    root = Path(tempfile.mkdtemp(prefix="mlfactory-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    initdb = [str(BIN / "initdb"), "-D", str(data), "-U", "mlf", "--auth=trust", "-E", "UTF8"]
    _run(initdb)
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
    _run(
        [
            str(BIN / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ]
    )
    try:
        yield f"postgresql+psycopg://mlf@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(postgres_url: str, name: str) -> str:
    """The URL of a new, empty database `name` on the test server."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
