"""SQLite files that MLflow or Optuna would make their store: only a new, an empty or their own.

Both add their tables to whatever database their URL names: a SQLite file of another program
(`--storage shop.db`) would quietly become a store, and a file that is no database at all fails
deep inside SQLAlchemy. `foreign_sqlite_problem` looks first, read-only.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from mlfactory.errors import first_line


def foreign_sqlite_problem(url: str, tables: frozenset[str], store: str) -> str | None:
    """Why the SQLite file of `url` cannot be `store`'s (an MLflow store, an Optuna storage):
    it is no SQLite database, or it holds tables and not all of `tables`; None when it is
    missing, empty, `store`'s own, or `url` is not a SQLite URL."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database or ""
    except ArgumentError:
        return None  # refused with its own message where it is opened
    path = Path(database).expanduser()
    if not database or not path.is_file():
        return None
    read_only = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(read_only, uri=True)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error as exc:
        return f"{path} cannot be read as a SQLite database: {first_line(exc)}"
    found = {str(name) for (name,) in rows}
    if found and not tables <= found:
        shown = ", ".join(sorted(found)[:3]) + (", ..." if len(found) > 3 else "")
        return (
            f"{path} is a SQLite database of something else (tables {shown}), not {store}; "
            "it was left unchanged"
        )
    return None
