"""`POST /v1/admin/reload`: swap in a new bundle while the server keeps answering.

The new bundle is loaded and test-run in a thread while the old model serves on; then one
assignment makes it the model of every request that starts afterwards. Requests already under
way finish on the model they were encoded for (see `batcher`), so a reload fails no request.
A bundle that does not load is refused with a 4xx and the old model keeps serving.

The endpoint needs `Authorization: Bearer <MLFACTORY_ADMIN_TOKEN>`; without that variable set
the admin API is disabled (403). Each failed authentication is logged with the client's
address, and an address with `admin_failures_per_minute` failures in the last minute gets 429
(with `Retry-After`) without its token being checked, so tokens cannot be guessed at speed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mlfactory.errors import MlfactoryError
from mlfactory.predictor import Predictor
from mlfactory.serving.docs import show_model
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.monitoring import load_served_profile
from mlfactory.serving.predict import current_predictor
from mlfactory.serving.schemas import (
    ErrorResponse,
    ModelRef,
    ReloadRequest,
    ReloadResponse,
    describe_errors,
)
from mlfactory.serving.settings import ServingSettings, env_name
from mlfactory.serving.uploads import read_body

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
FAILURE_WINDOW_S = 60.0
# Addresses remembered at most; past it the quietest are forgotten (memory stays bounded).
MAX_TRACKED_CLIENTS = 10_000

router = APIRouter()


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    dependencies=[Depends(HTTPBearer(auto_error=False))],  # documents the scheme only
    responses={code: {"model": ErrorResponse} for code in (401, 403, 409, 413, 422, 429)},
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
    throttle: AuthThrottle = request.app.state.auth_throttle
    client = request.client.host if request.client else "unknown"
    wait_s = throttle.retry_after(client) if settings.admin_token is not None else None
    if wait_s is not None:
        seconds = math.ceil(wait_s)
        raise HTTPException(
            429,
            f"too many failed admin authentications from {client}; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
    try:
        authorize(request.headers.get("authorization"), settings.admin_token)
    except HTTPException as exc:
        if exc.status_code == 401:
            failures = throttle.record_failure(client)
            log.warning(
                "admin authentication failed from %s (%d in the last minute)", client, failures
            )
        raise
    previous = current_predictor(request)
    body = await read_body(request.stream(), MAX_BODY_BYTES)
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
        show_model(request.app, predictor.bundle.meta)
        metrics.reloads.labels("ok").inc()
    old, new = previous.bundle.meta, predictor.bundle.meta
    log.info("reloaded: %s %s -> %s %s", old.name, old.version, new.name, new.version)
    return ReloadResponse(
        previous=ModelRef(name=old.name, version=old.version),
        current=ModelRef(name=new.name, version=new.version),
        bundle=str(predictor.bundle.path),
    )


class AuthThrottle:
    """Failed admin authentications per client address, over the last `FAILURE_WINDOW_S`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None when it may now."""
        recent = self._recent(client)
        if len(recent) < self.limit:
            return None
        return max(0.0, recent[0] + FAILURE_WINDOW_S - time.monotonic())

    def record_failure(self, client: str) -> int:
        """Count a failure of `client`; returns its failures in the window."""
        if client not in self.failures and len(self.failures) >= MAX_TRACKED_CLIENTS:
            for address in [a for a in self.failures if not self._recent(a)]:
                del self.failures[address]
            if len(self.failures) >= MAX_TRACKED_CLIENTS:  # all busy: forget the oldest
                del self.failures[next(iter(self.failures))]
        recent = self.failures.setdefault(client, deque())
        recent.append(time.monotonic())
        return len(self._recent(client))

    def _recent(self, client: str) -> deque[float]:
        recent = self.failures.get(client, deque())
        cutoff = time.monotonic() - FAILURE_WINDOW_S
        while recent and recent[0] < cutoff:
            recent.popleft()
        return recent


def authorize(header: str | None, token: str | None) -> None:
    """Check an `Authorization` header against the admin token.

    Raises:
        HTTPException: 403 when no token is configured, 401 when the header is wrong.
    """
    if token is None:
        raise HTTPException(
            403, f"the admin API is disabled: set {env_name('admin_token')} to enable it"
        )
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise HTTPException(
            401,
            "missing or wrong admin token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
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
    predictor.profile = load_served_profile(
        predictor.bundle, predictor.embedding_width, predictor.has_early_features
    )
    if predictor.profile is not None and predictor.graph_scorer and not predictor.scores_in_graph:
        log.warning(
            "the OOD score in %s was made for another profile: scoring in numpy instead "
            "(`mlfactory profile BUNDLE` puts the profile's score in the model)",
            predictor.bundle.model_path,
        )
    return predictor
