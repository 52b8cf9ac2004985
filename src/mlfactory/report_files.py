"""Where `report --out` and `monitor --html` may write: never over what they read.

A report written over the prediction log it reports on, or over a file of the bundle, would
destroy the input in one keystroke (`--html predictions.db`): both are refused before any work,
and so are a name that is not `.html` and a path inside any bundle folder (another bundle's
`model.onnx`).
"""

from __future__ import annotations

from pathlib import Path

from mlfactory.bundle import META_FILE
from mlfactory.errors import ConfigError
from mlfactory.paths import is_within, same_file


def check_report_path(out: Path, option: str, bundle: Path, log_url: str | None) -> None:
    """Refuse `out` when it is a folder, inside the bundle folder, the SQLite prediction log, not
    an `.html` file, or inside a folder holding a bundle (its `bundle.json`).

    Args:
        out: the HTML file to write.
        option: the option that named it, for messages (`--out`, `--html`).
        bundle: the folder of the bundle the report reads (`Bundle.path`).
        log_url: the prediction log's SQLAlchemy URL, if the report reads one.

    Raises:
        ConfigError: one line naming the option, the path and what it would overwrite.
    """
    if out.is_dir():
        raise ConfigError(f"{option} {out} is a folder: give a file name, e.g. report.html")
    if is_within(out, bundle):
        raise ConfigError(
            f"{option} {out} is inside the bundle {bundle}: write the report elsewhere"
        )
    log_file = _sqlite_file(log_url)
    if log_file is not None and same_file(log_file, out):
        raise ConfigError(f"{option} {out} is the prediction log: write the report elsewhere")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{option} {out}: a report is HTML: give a .html file name")
    for folder in out.resolve().parents:
        if (folder / META_FILE).is_file():
            raise ConfigError(
                f"{option} {out} is inside the bundle {folder}: write the report elsewhere"
            )


def _sqlite_file(log_url: str | None) -> Path | None:
    """The file of a SQLite log (`sqlite:///predictions.db`, or the file's path), None for
    a log of another database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not log_url:
        return None
    if "://" not in log_url:  # `--log predictions.db`: the file itself
        return Path(log_url).expanduser()
    try:
        url = make_url(log_url)
    except ArgumentError:
        return None  # refused with its own message where the log is opened
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser()
