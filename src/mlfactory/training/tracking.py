"""MLflow tracking: a local SQLite store by default, any MLflow server via `tracking_uri`."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from mlfactory.config.schema import TrackingConfig

log = logging.getLogger(__name__)
RUN_STATE_FILE = "run.json"


def make_logger(config: TrackingConfig, run_name: str, run_id: str | None) -> MLFlowLogger:
    """A Lightning MLflow logger; `run_id` continues an existing run (resume)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MLFlowLogger(
        experiment_name=config.experiment,
        run_name=run_name,
        tracking_uri=config.tracking_uri,
        run_id=run_id,
        artifact_location=config.artifact_location,
        log_model=False,
    )


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


def log_metrics(logger: MLFlowLogger, metrics: dict[str, float]) -> None:
    """Log final scalar metrics on the run."""
    for key, value in metrics.items():
        logger.experiment.log_metric(logger.run_id, key, float(value))


def log_artifact(logger: MLFlowLogger, path: Path, artifact_path: str | None = None) -> None:
    """Upload a file or a folder to the run's artifacts."""
    if path.is_dir():
        logger.experiment.log_artifacts(logger.run_id, str(path), artifact_path)
    else:
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


def save_run_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Remember what `--resume` needs (MLflow run id, recipe, overrides)."""
    (out_dir / RUN_STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def load_run_state(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RUN_STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def git_commit() -> str | None:
    """The current git commit (with a `-dirty` suffix for uncommitted changes), if any."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit
