"""Monitoring in the server: the OOD score of every input, and the drift and history endpoints.

The bundle's reference profile (`profile.npz`, written at export) is loaded with the model. Each
prediction then gets its out-of-distribution score (`ood_scores`): the model's own `ood_score`
output when export put the profile's scorer in its graph (`mlfactory.training.ood_graph`;
computed by ONNX Runtime outside the GIL), otherwise one small float32 matrix product in numpy
on the request's embeddings once the model has answered. What it costs: docs/benchmarks.md,
"What monitoring costs the server". A bundle without a profile serves as before, with
`ood_score` and `in_distribution` null.

`GET /v1/monitoring/drift` checks the latest logged predictions of the served model against its
profile and returns the report's JSON contract (`DriftReport.to_json`); `GET
/v1/monitoring/history` cuts them into time buckets (`mlfactory.monitoring.history`). Both read
the log and run the checks in a thread, never on the event loop, and one at a time per worker,
with the background check (`run_check`): a window of 100,000 predictions takes seconds of CPU
and about 0.55 GB to read, so requests for it wait their turn instead of taking every core from the
model, or the worker's memory, however many arrive together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request

from mlfactory.bundle import Bundle
from mlfactory.durations import HOW_TO_WRITE, parse_duration
from mlfactory.errors import BundleError, LogDatabaseError
from mlfactory.monitoring.flagged import LISTED, MAX_LISTED
from mlfactory.monitoring.history import MAX_BUCKETS, history
from mlfactory.monitoring.log_window import (
    MAX_WINDOW_ROWS,
    other_models_note,
    period_cut_note,
    window_from_engine,
    window_rows,
)
from mlfactory.monitoring.profile import (
    REWRITE,
    ReferenceProfile,
    load_profile,
    missing_profile_message,
)
from mlfactory.monitoring.report import MonitorSettings, Window, check_window
from mlfactory.predictor import BatchOutput, Predictor
from mlfactory.serving.auth import MONITOR_GUARD, MONITOR_GUARD_ERRORS
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.schemas import DriftReportOut, ErrorResponse, HistoryOut
from mlfactory.serving.settings import MIN_MONITOR_LEVEL, ServingSettings

log = logging.getLogger(__name__)
DEFAULT_BUCKETS = 20
# Checks of the log that run at once in a worker (the endpoints' and the background one).
CHECKS_AT_ONCE = 1
T = TypeVar("T")
LAST_HELP = (
    "The latest predictions to read (default 1,000; with `since`, at most this many of that "
    "period's, default 100,000)."
)
SINCE_HELP = "Only predictions within this duration before now: 30m, 6h, 2d, 1w."
FLAGGED_HELP = "The most out-of-distribution inputs to list (`ood.flagged`), at most."
LEVEL_HELP = "False-alarm level of the drift verdict (default MLFACTORY_MONITOR_LEVEL, 0.05)."
# Each input's OOD score and whether it is in distribution; Nones without a profile.
OodScores = tuple[list[float | None], list[bool | None]]

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "The served bundle has no monitoring profile."},
    422: {"model": ErrorResponse, "description": "A query parameter out of range."},
    503: {"model": ErrorResponse, "description": "Not ready, or the log cannot be read."},
    **MONITOR_GUARD_ERRORS,
}


def load_served_profile(
    bundle: Bundle, embedding_width: int | None = None, has_early_features: bool = True
) -> tuple[ReferenceProfile | None, str | None]:
    """The bundle's profile, or None and why the server monitors without it (logged: a
    warning, or for a bundle that has none, one info line).

    Args:
        bundle: the served bundle.
        embedding_width: the width of the model's embedding output, when its graph fixes it:
            a profile made for another width would fail every request, so it is not used.
        has_early_features: whether the model outputs `early_features`; a profile whose OOD
            score reads them is not used with a model that has none.
    """
    try:
        profile = load_profile(bundle.path)
    except BundleError as exc:
        return _without(str(exc))
    if profile is None:
        missing = missing_profile_message(bundle.meta.name, bundle.meta.version)
        log.info(missing)
        return None, missing
    if profile.labels != bundle.meta.labels:
        return _without(f"the profile's labels are not the bundle's ({REWRITE})")
    width = int(profile.ood.class_means.shape[1])
    if embedding_width is not None and width != embedding_width:
        return _without(
            f"the profile is for a {width}-wide embedding, the model's is {embedding_width} "
            f"wide ({REWRITE})"
        )
    if profile.ood.reads_early_features and not has_early_features:
        return _without(
            "the profile's OOD score reads early features, which the model does not output "
            f"({REWRITE})"
        )
    return profile, None


def _without(problem: str) -> tuple[None, str]:
    log.warning("serving without monitoring: %s", problem)
    return None, f"{problem}: the server monitors nothing"


def ood_scores(predictor: Predictor, output: BatchOutput) -> OodScores:
    """Each input's OOD score and whether it is in distribution (None without a profile)."""
    profile = predictor.profile
    if profile is None:
        return [None] * len(output.probabilities), [None] * len(output.probabilities)
    if output.ood_scores is not None:  # computed in the model's graph, outside the GIL
        scores = output.ood_scores.astype(np.float64)
    else:
        scores = profile.ood.score(output.embeddings, output.early_features)
    return scores.round(6).tolist(), (scores <= profile.ood.threshold).tolist()


@router.get(
    "/v1/monitoring/drift",
    response_model=DriftReportOut,
    dependencies=MONITOR_GUARD,
    responses=ERRORS,
    summary="Drift report of the latest logged predictions against the bundle's profile",
)
async def drift_report(
    request: Request,
    last: int | None = Query(None, ge=1, le=MAX_WINDOW_ROWS, description=LAST_HELP),
    since: str | None = Query(None, description=SINCE_HELP),
    flagged: int = Query(LISTED, ge=0, le=MAX_LISTED, description=FLAGGED_HELP),
    level: float | None = Query(
        None, ge=MIN_MONITOR_LEVEL, lt=1, allow_inf_nan=False, description=LEVEL_HELP
    ),
) -> dict[str, Any]:
    """Check the served model's latest logged predictions (the `mlfactory monitor` report)."""
    predictor, profile = _monitored(request)
    model, run_id = _model(predictor), predictor.bundle.meta.mlflow_run_id
    rows, period = _window_bounds(last, since)
    settings = MonitorSettings(flagged=flagged, level=_level(request, level))

    def report() -> dict[str, Any]:
        window = _read(request, predictor, profile, rows, period)
        checked = check_window(profile, window, model, settings)
        cut = period_cut_note(len(window), last, since, "last=N")
        others = other_models_note(window, f"{model['name']} {model['version']}", run_id)
        checked.notes += [note for note in (cut, others) if note]
        return checked.to_json()

    return await run_check(request.app.state.check_limiter, report)


@router.get(
    "/v1/monitoring/history",
    response_model=HistoryOut,
    dependencies=MONITOR_GUARD,
    responses=ERRORS,
    summary="The latest logged predictions checked in time buckets",
)
async def drift_history(
    request: Request,
    last: int | None = Query(None, ge=1, le=MAX_WINDOW_ROWS, description=LAST_HELP),
    since: str | None = Query(None, description=SINCE_HELP),
    buckets: int = Query(DEFAULT_BUCKETS, ge=1, le=MAX_BUCKETS, description="Time buckets."),
    level: float | None = Query(
        None, ge=MIN_MONITOR_LEVEL, lt=1, allow_inf_nan=False, description=LEVEL_HELP
    ),
) -> dict[str, Any]:
    """Cut the latest logged predictions into equal time spans and check each one."""
    predictor, profile = _monitored(request)
    rows, period = _window_bounds(last, since)
    model = _model(predictor)
    settings = MonitorSettings(level=_level(request, level))

    def buckets_of() -> dict[str, Any]:
        window = _read(request, predictor, profile, rows, period)
        return {
            "level": settings.level,
            "buckets": history(profile, window, model, buckets, settings),
        }

    return await run_check(request.app.state.check_limiter, buckets_of)


def check_limiter() -> anyio.CapacityLimiter:
    """The slots for checks of the log of one worker (create it on the worker's event loop)."""
    return anyio.CapacityLimiter(CHECKS_AT_ONCE)


async def run_check(limiter: anyio.CapacityLimiter, check: Callable[[], T]) -> T:
    """Run `check` (reading the log and checking it) in a thread once a slot of `limiter` is
    free; callers beyond `CHECKS_AT_ONCE` wait in turn."""
    return await anyio.to_thread.run_sync(check, limiter=limiter)


def read_served_window(
    prediction_log: PredictionLog,
    predictor: Predictor,
    profile: ReferenceProfile,
    last: int,
    since: timedelta | None = None,
) -> Window:
    """The served model's `last` logged predictions, of those within `since` before now when
    given (blocking: call in a thread).

    Raises:
        LogDatabaseError: the log cannot be read.
    """
    meta = predictor.bundle.meta
    return window_from_engine(
        prediction_log.engine,
        meta.name,
        meta.version,
        last,
        since,
        labels=profile.labels,
        run_id=meta.mlflow_run_id,
    )


def _level(request: Request, asked: float | None) -> float:
    """The query's level, else the server's `MLFACTORY_MONITOR_LEVEL`."""
    settings: ServingSettings = request.app.state.settings
    return settings.monitor_level if asked is None else asked


def _window_bounds(last: int | None, since: str | None) -> tuple[int, timedelta | None]:
    """The rows to read and the period they lie in, from the query's `last` and `since`."""
    period = None if since is None else parse_duration(since)
    if since is not None and period is None:
        raise HTTPException(422, f"since '{since}' is not a duration: {HOW_TO_WRITE}")
    return window_rows(last, period), period


def _read(
    request: Request,
    predictor: Predictor,
    profile: ReferenceProfile,
    last: int,
    since: timedelta | None,
) -> Window:
    try:
        prediction_log = request.app.state.prediction_log
        return read_served_window(prediction_log, predictor, profile, last, since)
    except LogDatabaseError as exc:
        raise HTTPException(503, str(exc)) from None


def _monitored(request: Request) -> tuple[Predictor, ReferenceProfile]:
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise HTTPException(503, "the model is not loaded yet; retry shortly")
    if predictor.profile is None:
        meta = predictor.bundle.meta
        why = predictor.profile_problem or missing_profile_message(meta.name, meta.version)
        raise HTTPException(404, why)
    return predictor, predictor.profile


def _model(predictor: Predictor) -> dict[str, str]:
    return {"name": predictor.bundle.meta.name, "version": predictor.bundle.meta.version}
