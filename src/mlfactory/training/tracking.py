"""The Lightning MLflow logger of a training run (local SQLite by default, any MLflow server)."""

from __future__ import annotations

import logging

from lightning.pytorch.loggers import MLFlowLogger

from mlfactory.config.schema import TrackingConfig
from mlfactory.tracking import TrackedRun


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


def tracked_run(logger: MLFlowLogger) -> TrackedRun:
    """The logger's run, for what is logged outside Lightning (evaluation, the bundle)."""
    return TrackedRun(logger.experiment, logger.run_id or "")
