"""Where `mlfactory demo` keeps what it makes, and the commands it prints to go on from there.

The demo's MLflow store is `MLFLOW_TRACKING_URI` when it is set (the store `serve models:/...`,
`register` and `predict RUN_ID` read), else a SQLite store inside the demo's folder; its data
cache is inside the folder too. The printed commands name that store absolutely, so that they
work from any folder, and call `mlfactory` by its path when it is not on the PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from mlfactory.mlflow_store import shown_url

SQLITE_PREFIX = "sqlite:///"


def demo_tracking_uri(out: Path) -> str:
    """The store the demo trains and registers in: `MLFLOW_TRACKING_URI` (a relative SQLite
    path made absolute), else `OUT/mlruns.db`."""
    named = os.environ.get("MLFLOW_TRACKING_URI")
    if named:
        return absolute_sqlite_uri(named)
    return f"{SQLITE_PREFIX}{(out / 'mlruns.db').resolve()}"


def absolute_sqlite_uri(uri: str) -> str:
    """`uri` with a relative SQLite database path made absolute (against this folder); any
    other URI as it is. `sqlite:///mlruns.db` names a file in the current folder, which is
    another file from another folder."""
    if not uri.startswith(SQLITE_PREFIX) or uri.startswith(SQLITE_PREFIX + "/"):
        return uri
    path, query = uri.removeprefix(SQLITE_PREFIX), ""
    if "?" in path:
        path, query = path.split("?", 1)
        query = "?" + query
    return f"{SQLITE_PREFIX}{Path(path).expanduser().resolve()}{query}"


def demo_overrides(out: Path) -> list[str]:
    """The recipe overrides that keep the demo's store, its artifacts and its data cache with
    the demo (a caller's own overrides, given after these, win)."""
    folder = out.resolve()
    overrides = [
        f"tracking.tracking_uri={_hydra_value(demo_tracking_uri(out))}",
        f"data.cache_dir={_hydra_value(str(folder / '.mlfactory' / 'data'))}",
    ]
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # a new store of its own: artifacts beside it
        overrides.append(f"tracking.artifact_location={_hydra_value(str(folder / 'mlruns'))}")
    return overrides


def _hydra_value(value: str) -> str:
    """`value` quoted for a Hydra override (a path may hold spaces, `=` or quotes)."""
    escaped = value.replace("'", "\\'")
    return f"'{escaped}'"


def command_name(name: str) -> str:
    """How to call this environment's `name` (mlfactory, mlflow) from the user's shell: its
    bare name when the PATH finds this very one, else its absolute path (a virtual environment
    that is not activated)."""
    here = Path(sys.executable).parent / name
    if not here.exists():
        return name
    found = shutil.which(name)
    if found and os.path.samefile(found, here):
        return name
    return shlex.quote(str(here))


def store_prefix(tracking_uri: str) -> str:
    """`MLFLOW_TRACKING_URI=...` before a command that looks the demo's run or model up; its
    password, if any, shown as *** (MLFLOW_TRACKING_PASSWORD or PGPASSWORD give it)."""
    return f"MLFLOW_TRACKING_URI={shlex.quote(shown_url(tracking_uri))}"


def next_commands(
    bundle: Path, champion: str, tracking_uri: str, log_file: Path, last: int
) -> list[str]:
    """The lines that say what the demo left and the commands that go on from it, each
    command on a line of its own (to copy whole), under a line that says what it does."""
    mlfactory, store = command_name("mlfactory"), store_prefix(tracking_uri)
    path, log = shlex.quote(str(bundle)), shlex.quote(str(log_file))
    return [
        f"bundle: {bundle}",
        f"prediction log of the demo server: {log_file}",
        "serve the bundle (or the registry's champion, the same model):",
        f"  {mlfactory} serve {path} --port 8000",
        f"  {store} {mlfactory} serve {champion} --port 8000",
        "predict files with it:",
        f"  {mlfactory} predict {path} FILE...",
        "monitor the demo server's last stream (the inverted files):",
        f"  {mlfactory} monitor {path} --log {log} --last {last} --html monitor.html",
        "browse the MLflow runs and the registry:",
        f"  {command_name('mlflow')} ui --backend-store-uri {shlex.quote(shown_url(tracking_uri))}",
    ]


def shown_path(path: Path) -> str:
    """`path` relative to the current folder when it is inside it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
