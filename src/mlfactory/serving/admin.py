"""`POST /v1/admin/reload`: swap in a new bundle while the server keeps answering.

The new bundle is loaded and test-run in a thread while the old model serves on; then one
assignment makes it the model of every request that starts afterwards. Requests already under
way finish on the model they were encoded for (see `batcher`), so a reload fails no request.
A bundle that does not load is refused with a 4xx and the old model keeps serving.

The endpoint needs `Authorization: Bearer <MLFACTORY_ADMIN_TOKEN>`; without that variable set
the admin API is disabled (403). Failed authentications are logged and throttled (`auth`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mlfactory.errors import MlfactoryError
from mlfactory.predictor import Predictor
from mlfactory.serving.auth import require_admin_token
from mlfactory.serving.docs import show_model
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.monitoring import load_served_profile
from mlfactory.serving.predict import current_predictor
from mlfactory.serving.schemas import (
    ErrorResponse,
    ModelRef,
    ReloadRequest,
    ReloadResponse,
)
from mlfactory.serving.settings import ServingSettings
from mlfactory.serving.uploads import read_json_body
from mlfactory.serving.validation_errors import describe_errors

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
RELOAD_EXAMPLE = '{"bundle": "/path/to/bundle"}'

router = APIRouter()


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    dependencies=[Depends(HTTPBearer(auto_error=False))],  # documents the scheme only
    responses={code: {"model": ErrorResponse} for code in (401, 403, 409, 413, 415, 422, 429)},
    summary="Serve another bundle (or the same one, re-read) without downtime",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": ReloadRequest.model_json_schema()}},
        },
    },
)
async def reload_model(request: Request) -> ReloadResponse:
    """Load a bundle (default: the served one, re-read) and serve it from now on."""
    settings: ServingSettings = request.app.state.settings
    require_admin_token(request)
    previous = current_predictor(request)
    body = await read_json_body(request, MAX_BODY_BYTES, RELOAD_EXAMPLE)
    try:
        target = ReloadRequest.model_validate_json(body) if body.strip() else ReloadRequest()
    except ValidationError as exc:
        raise HTTPException(422, f"invalid JSON body: {describe_errors(exc.errors())}") from None
    path = Path(target.bundle) if target.bundle else previous.bundle.path
    metrics: ServingMetrics = request.app.state.metrics
    lock: asyncio.Lock = request.app.state.reload_lock
    async with lock:  # one reload at a time; requests are not held up
        try:
            predictor = await run_in_threadpool(load_predictor, path, settings)
        except MlfactoryError as exc:
            metrics.reloads.labels("failed").inc()
            raise HTTPException(422, f"cannot reload: {exc}") from None
        served = previous.bundle.modality
        if predictor.bundle.modality is not served:  # the API's request schema is the modality's
            metrics.reloads.labels("failed").inc()
            raise HTTPException(
                409,
                f"cannot reload: {path} is a {predictor.bundle.meta.modality} bundle and this "
                f"server serves {served.name} inputs; start a new server for it",
            )
        previous = request.app.state.predictor
        request.app.state.predictor, request.app.state.bundle = predictor, predictor.bundle
        metrics.set_model(predictor.bundle.meta)
        request.app.state.drift_watch.recheck()
        show_model(request.app, predictor.bundle.meta)
        metrics.reloads.labels("ok").inc()
    old, new = previous.bundle.meta, predictor.bundle.meta
    log.info("reloaded: %s %s -> %s %s", old.name, old.version, new.name, new.version)
    return ReloadResponse(
        previous=ModelRef(name=old.name, version=old.version),
        current=ModelRef(name=new.name, version=new.version),
        bundle=str(predictor.bundle.path),
    )


def load_predictor(path: Path, settings: ServingSettings) -> Predictor:
    """Load and test-run the bundle at `path` with the server's threads, and its monitoring
    profile if it has one (blocking: call in a thread).

    Raises:
        MlfactoryError: the bundle is missing, incomplete, or its model does not run.
    """
    predictor = Predictor.from_path(
        path, settings.ort_intra_op_threads, settings.ort_inter_op_threads
    )
    predictor.profile, predictor.profile_problem = load_served_profile(
        predictor.bundle, predictor.embedding_width, predictor.has_early_features
    )
    if predictor.profile is not None and predictor.graph_scorer and not predictor.scores_in_graph:
        log.warning(
            "the OOD score in %s was made for another profile: scoring in numpy instead "
            "(`mlfactory profile BUNDLE` puts the profile's score in the model)",
            predictor.bundle.model_path,
        )
    return predictor
