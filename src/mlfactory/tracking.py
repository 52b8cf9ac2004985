"""MLflow tracking without torch: a run to log metrics and artifacts to, the run's state on disk.

Training logs through Lightning's MLflow logger (`training.tracking`), whose client is the same
`MlflowClient`; evaluation of a bundle logs through `TrackedRun` alone, so `mlfactory evaluate`
never imports torch or Lightning.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlfactory.config.schema import TrackingConfig

RUN_STATE_FILE = "run.json"


@dataclass
class TrackedRun:
    """An MLflow run and the client that writes to it."""

    client: Any  # mlflow.tracking.MlflowClient
    run_id: str

    @classmethod
    def open(cls, config: TrackingConfig, run_id: str) -> TrackedRun:
        """The existing run `run_id` in the store named by `config.tracking_uri`."""
        from mlflow.tracking import MlflowClient

        from mlfactory.mlflow_reach import bound_mlflow_waits

        bound_mlflow_waits(config.tracking_uri)
        return cls(MlflowClient(tracking_uri=config.tracking_uri), run_id)

    @classmethod
    def find(cls, config: TrackingConfig, run_id: str) -> TrackedRun | None:
        """`open`, for a run that may not be there: None when the store does not hold it (a
        bundle copied away from its store, a SQLite store relative to another folder) or
        cannot be reached or used. A missing SQLite store is not created, and a database of
        something else (SQLite, PostgreSQL, MySQL) is not made a store."""
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        from mlfactory.errors import BundleError, ConfigError
        from mlfactory.mlflow_store import check_sqlite_store, missing_sqlite_store

        if missing_sqlite_store(config.tracking_uri) is not None:
            return None
        try:
            check_sqlite_store(config.tracking_uri, "")  # never turns a database into a store
            run = cls.open(config, run_id)
            run.client.get_run(run_id)
        except (MlflowException, SQLAlchemyError, ConfigError, BundleError, OSError):
            return None  # a plain path (MLflow's file store), no database, another database,
            # a database server that does not answer
        return run

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Log final scalar metrics on the run."""
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder to the run's artifacts."""
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def run_number(self) -> int:
        """This run's number among the runs of the same name in its experiment (1, 2, ...).

        Runs are numbered by start time (then id), deleted runs included, so a number is never
        given twice, and a resumed run keeps its number. It is the bundle's default version.
        """
        from mlflow.entities import ViewType

        info = self.client.get_run(self.run_id).info
        name = info.run_name
        # MLflow's filter grammar has no escapes: quote with the quote the name lacks, else
        # read the whole experiment. The exact comparison below decides either way.
        quote = next((q for q in ("'", '"') if q not in name), None)
        query = f"attributes.run_name = {quote}{name}{quote}" if quote else ""
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [info.experiment_id],
                filter_string=query,
                run_view_type=ViewType.ALL,
                max_results=1000,
                page_token=token,
            )
            runs.extend(run for run in page if run.info.run_name == name)
            token = page.token
            if not token:
                break
        order = sorted((run.info.start_time, run.info.run_id) for run in runs)
        return 1 + [run_id for _, run_id in order].index(self.run_id)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"trainer.lr": 0.001, ...} for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def without_secrets(value: Any) -> Any:
    """`value` (a recipe, its overrides, MLflow params) with the credentials of every URL in it
    left out, as it is stored in `run.json`, `bundle.json` and MLflow: a password
    (`tracking.tracking_uri=postgresql+psycopg://mlf:s3cret@db/mlflow` is kept as
    `...://mlf@db/mlflow`) and the values of a signed URL's credential query parameters
    (`data.source=https://...?X-Amz-Signature=***`, see `without_query_secrets`). Where the URL
    is used again (`--resume`, a bundle's run), the password comes from the environment
    (PGPASSWORD or ~/.pgpass for PostgreSQL, MLFLOW_TRACKING_PASSWORD for an MLflow server), and
    a signed download from the data cache."""
    from mlfactory.data.downloads import without_query_secrets
    from mlfactory.mlflow_reach import without_password

    if isinstance(value, dict):
        return {key: without_secrets(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(without_secrets(item) for item in value)
    if not isinstance(value, str) or "://" not in value:
        return value
    key, equals, url = value.partition("=")  # an override: `key=URL`
    if equals and "://" not in key:
        return f"{key}={without_query_secrets(without_password(url))}"
    return without_query_secrets(without_password(value))


def save_run_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Remember what `--resume` needs (MLflow run id, recipe, overrides), without the
    credentials of the URLs in it (`without_secrets`).

    Written to a file beside it, then renamed over it: a run stopped while writing leaves the
    previous state or the new one, never half of one."""
    path = out_dir / RUN_STATE_FILE
    partial = path.with_name(f".{RUN_STATE_FILE}.{os.getpid()}.partial")
    text = json.dumps(without_secrets(state), indent=2)
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)


def load_run_state(out_dir: Path) -> dict[str, Any] | None:
    """What `save_run_state` wrote in `out_dir`, or None."""
    path = out_dir / RUN_STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def git_commit(used: Sequence[Path] = ()) -> str | None:
    """The git commit of the current folder's checkout (with a `-dirty` suffix for uncommitted
    changes to tracked files, or for a file of `used` that git does not track: a recipe file
    written for the run and never committed), if any.

    The current folder is the user's project, where the recipe and data of a run usually live;
    which mlfactory trained it is in `training.run_record.code_versions`.

    A checkout that another user owns (a host folder mounted into a container that runs as
    root) is one Git refuses to read: that is said in a warning naming the fix, since the bundle
    then records no commit.
    """
    from mlfactory.output import phase_log

    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=5
        )
        if head.returncode != 0:
            if "dubious ownership" in head.stderr:  # git's words: "... repository at '/x'"
                folder = head.stderr.partition("at '")[2].partition("'")[0] or os.getcwd()
                phase_log.warning(
                    "git: the checkout %s belongs to another user, so Git refuses to read it "
                    "and the run records no commit: trust it with `git config --global --add "
                    "safe.directory %s`, or run as the folder's owner",
                    folder,
                    folder,
                )
            return None
        commit = head.stdout.strip()
        dirty = _git_status(["--untracked-files=no"])
        inside = [str(path.resolve()) for path in used if path.is_file()]
        if not dirty and inside:  # `?? path` for an untracked file of the checkout
            dirty = _git_status(["--untracked-files=all", "--", *inside])
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def _git_status(arguments: list[str]) -> str:
    """`git status --porcelain` with `arguments`; "" when git refuses them (a path outside the
    checkout: not part of it, so not a change to it)."""
    done = subprocess.run(
        ["git", "status", "--porcelain", *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=5,
    )
    return done.stdout.strip() if done.returncode == 0 else ""
