"""The HTTP API: one bundle served with FastAPI and ONNX Runtime. Torch is never imported here.

The bundle's metadata is read when the app is created; at start-up (lifespan) the ONNX session
is built once, the batcher's model-runner thread and the prediction log's writer thread start.
The event loop only streams bodies and awaits: decoding and preprocessing run in the request
threadpool, model calls in the runner thread (see `batcher`), log commits in the writer thread
(see `prediction_log`). Every error a client can cause is a 4xx whose JSON `detail` is one
sentence.

Each group of routes is an `APIRouter` in its own module, included here: `health` (`/health`,
`/v1/model`), `card` (`/v1/model/card`), `predict` (`/v1/predict`), `metrics` (`/metrics`),
`monitoring` (`/v1/monitoring/drift`, `/v1/monitoring/history`), `feedback` (`/v1/feedback`),
`admin` (`/v1/admin/reload`) and `docs` (`/docs`, `/redoc`, served offline).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from mlfactory.bundle import Bundle, load_bundle
from mlfactory.errors import BundleError, InputError
from mlfactory.monitoring.blas import pin_one_thread
from mlfactory.serving import admin, card, docs, feedback, health, metrics, monitoring
from mlfactory.serving.auth import AuthThrottle
from mlfactory.serving.batcher import Batcher
from mlfactory.serving.drift_watch import DriftWatch
from mlfactory.serving.input_store import InputStore
from mlfactory.serving.log_retention import LogRetention
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.middleware import (
    PROTOCOL_STATUS,
    AllowedHostsMiddleware,
    BodyTimeoutMiddleware,
    RequestContextMiddleware,
)
from mlfactory.serving.predict import predict_router
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.settings import ServingSettings, allowed_host_names, retention_period
from mlfactory.serving.validation_errors import describe_errors

BUNDLE_ENV = "MLFACTORY_BUNDLE"
# nginx's status for "the client closed the connection before the answer": not a server error.
CLIENT_CLOSED_REQUEST = 499
# Set on an exception our handler logged: Starlette raises it again after the 500 is sent, and
# uvicorn would log the same traceback a second time ("Exception in ASGI application").
LOGGED_MARK = "_mlfactory_logged"


class _NotLoggedTwice(logging.Filter):
    """Drops uvicorn's record of an exception the app's 500 handler already logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, LOGGED_MARK, False)


NOT_LOGGED_TWICE = _NotLoggedTwice()
log = logging.getLogger(__name__)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def create_app(bundle_path: str | Path, settings: ServingSettings | None = None) -> FastAPI:
    """The FastAPI application serving one bundle.

    Nothing is loaded or started until the app's lifespan runs (uvicorn, or
    `with TestClient(app)`).

    Args:
        bundle_path: the bundle folder (or its `bundle.json`).
        settings: limits and runtime options (default: `ServingSettings.from_env()`).

    Raises:
        BundleError: the bundle is missing or incomplete.
    """
    bundle = load_bundle(bundle_path)
    config = settings or ServingSettings.from_env()
    served_metrics = ServingMetrics()
    app = FastAPI(lifespan=_lifespan(bundle, config, served_metrics), docs_url=None, redoc_url=None)
    docs.show_model(app, bundle.meta)
    app.state.bundle, app.state.settings, app.state.metrics = bundle, config, served_metrics
    app.state.predictor = None
    app.state.input_store = None  # the lifespan opens it (MLFACTORY_INPUT_STORE)
    app.state.auth_throttle = AuthThrottle(config.admin_failures_per_minute)
    allowed_hosts = allowed_host_names(config.allowed_hosts)
    if allowed_hosts is not None:  # inside the request context: refusals are counted, with ids
        app.add_middleware(AllowedHostsMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyTimeoutMiddleware, timeout_s=config.body_timeout_s)
    app.add_middleware(RequestContextMiddleware, metrics=served_metrics)
    _add_error_handlers(app)
    app.include_router(health.router)
    app.include_router(card.router)
    app.include_router(predict_router(bundle.modality, config))
    app.include_router(metrics.router)
    app.include_router(monitoring.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    app.include_router(docs.router)
    return app


def _lifespan(bundle: Bundle, config: ServingSettings, served: ServingMetrics) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        pin_one_thread()  # numpy's products here are small: BLAS threads only wait on cores
        prediction_log = await run_in_threadpool(PredictionLog, config.log_url)
        prediction_log.start()
        store = None
        if config.input_store:
            store = await run_in_threadpool(InputStore.open, config.input_store)
        app.state.input_store = store
        batcher = Batcher(config.max_batch_size, config.max_wait_ms, served.observe_batch)
        sampler: asyncio.Task[None] | None = None
        retention: LogRetention | None = None
        app.state.check_limiter = monitoring.check_limiter()  # on the loop that will use it
        watch = DriftWatch(
            config, prediction_log, served, lambda: app.state.predictor, app.state.check_limiter
        )
        try:
            predictor = await run_in_threadpool(admin.load_predictor, bundle.path, config)
            batcher.start()
            served.watch_queues(
                lambda: batcher.queue_depth, lambda: prediction_log.pending, prediction_log.lag_s
            )
            served.set_model(bundle.meta)
            sampler = asyncio.create_task(served.sample_forever())
            app.state.batcher, app.state.prediction_log = batcher, prediction_log
            app.state.reload_lock = asyncio.Lock()  # created on the loop that will use it
            app.state.predictor = predictor
            app.state.drift_watch = watch
            watch.start()
            period = retention_period(config.log_retention)
            if period is not None:
                retention = LogRetention(prediction_log.engine, period, served, store)
                retention.start()
            log.info(
                "serving %s %s from %s (started in %.2f s)",
                bundle.meta.name,
                bundle.meta.version,
                bundle.path,
                time.perf_counter() - started,
            )
            yield
        finally:
            app.state.predictor = None
            await watch.stop()
            if retention is not None:
                await retention.stop()
            if sampler is not None:
                sampler.cancel()
            await batcher.stop()
            await run_in_threadpool(prediction_log.close)
            served.stop()

    return lifespan


def app_from_env() -> FastAPI:
    """`create_app` on the bundle named by `MLFACTORY_BUNDLE` (for `uvicorn --factory`).

    Raises:
        BundleError: `MLFACTORY_BUNDLE` is unset or names no valid bundle.
    """
    path = os.environ.get(BUNDLE_ENV, "").strip()
    if not path:
        raise BundleError(f"{BUNDLE_ENV} is not set: set it to the bundle folder to serve")
    return create_app(path)


def _add_error_handlers(app: FastAPI) -> None:
    async def input_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InputError)
        # After a body timeout the rest of the body may still come: the connection is done.
        headers = {"Connection": "close"} if exc.status_code == 408 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)

    async def client_disconnect(request: Request, exc: Exception) -> Response:
        # Counted as 499 in the metrics, never as a 5xx; nobody is left to read an answer.
        malformed = getattr(request.state, PROTOCOL_STATUS, None) == 400
        log.info(
            "%s during %s %s (request %s)",
            "malformed body (answered 400)" if malformed else "client disconnected",
            request.method,
            request.url.path,
            getattr(request.state, "request_id", "?"),
        )
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = f"invalid request: {describe_errors(exc.errors())}"
        return JSONResponse({"detail": detail}, status_code=422)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        setattr(exc, LOGGED_MARK, True)
        return JSONResponse(
            {"detail": f"internal server error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's Allow names the methods of the first route of the path only; the HEAD
        # of /health, /v1/model and /metrics is a route of its own (kept out of the schema).
        allowed = [
            method
            for method in HTTP_METHODS
            if any(
                route.matches({**request.scope, "method": method})[0] is Match.FULL
                for route in request.app.router.routes
            )
        ]
        return JSONResponse(
            {"detail": getattr(exc, "detail", "Method Not Allowed")},
            status_code=405,
            headers={"Allow": ", ".join(allowed)},
        )

    app.add_exception_handler(405, method_not_allowed)
    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(ClientDisconnect, client_disconnect)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
    logging.getLogger("uvicorn.error").addFilter(NOT_LOGGED_TWICE)  # once: the same filter
