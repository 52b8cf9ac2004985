"""The Lightning MLflow logger of a training run (local SQLite by default, any MLflow server)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from mlfactory.config.schema import TrackingConfig
from mlfactory.mlflow_reach import bound_mlflow_waits
from mlfactory.tracking import TrackedRun, without_secrets


def make_logger(
    config: TrackingConfig, run_name: str, run_id: str | None, tags: dict[str, str] | None = None
) -> MLFlowLogger:
    """A Lightning MLflow logger; `run_id` continues an existing run (resume); `tags` are set
    on a new run when it is created. MLflow's waits on a server are bounded, and its run links
    kept off stdout (`bound_mlflow_waits`)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    bound_mlflow_waits(config.tracking_uri)
    return InterruptSafeMLFlowLogger(
        experiment_name=config.experiment,
        run_name=run_name,
        tracking_uri=config.tracking_uri,
        run_id=run_id,
        artifact_location=config.artifact_location,
        log_model=False,
        tags=tags,
    )


def tracked_run(logger: MLFlowLogger) -> TrackedRun:
    """The logger's run, for what is logged outside Lightning (evaluation, the bundle)."""
    return TrackedRun(logger.experiment, logger.run_id or "")


class InterruptSafeMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, whose writes a Ctrl-C does not cut in half.

    A Ctrl-C that lands inside a write to MLflow's SQLite store leaves that write's connection
    holding the database lock for the rest of the process: marking the run KILLED then waits
    out SQLite's busy timeout and fails. Here a Ctrl-C during a write takes effect as soon as
    the write has finished (`interrupt_after`). The params (the recipe) are logged without
    the credentials of the URLs in them (`without_secrets`).
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        with interrupt_after():
            super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any) -> None:
        if isinstance(params, Mapping):
            params = without_secrets(dict(params))
        with interrupt_after():
            super().log_hyperparams(params)


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block has finished, then raise KeyboardInterrupt.

    Only in the main thread and while SIGINT has Python's default handler (a program that
    installed its own keeps it); elsewhere the block runs as it is.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if received:
            raise KeyboardInterrupt
