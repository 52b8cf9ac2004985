"""The HTTP API: one bundle served with FastAPI and ONNX Runtime. Torch is never imported here.

The bundle's metadata is read when the app is created; at start-up (lifespan) the ONNX session
is built once, the batcher's model-runner thread and the prediction log's writer thread start.
The event loop only streams bodies and awaits: decoding and preprocessing run in the request
threadpool, model calls in the runner thread (see `batcher`), log commits in the writer thread
(see `prediction_log`). Every error a client can cause is a 4xx whose JSON `detail` is one
sentence.

Routes: `GET /health`, `GET /v1/model`, `POST /v1/predict` (see `predict`), `GET /metrics`
(Prometheus, see `metrics`), `POST /v1/admin/reload` (see `admin`).
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

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from mlfactory.bundle import Bundle, load_bundle
from mlfactory.errors import BundleError, InputError
from mlfactory.modalities import Modality
from mlfactory.predictor import Predictor
from mlfactory.serving.admin import reload_model
from mlfactory.serving.batcher import Batcher
from mlfactory.serving.metrics import CONTENT_TYPE, ServingMetrics
from mlfactory.serving.middleware import RequestContextMiddleware
from mlfactory.serving.predict import current_predictor, predict
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    PredictResponse,
    ReloadRequest,
    ReloadResponse,
    describe_errors,
    predict_request_body,
)
from mlfactory.serving.settings import ServingSettings

BUNDLE_ENV = "MLFACTORY_BUNDLE"
log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed HTTP request (Content-Length)."},
    413: {"model": ErrorResponse, "description": "Too many inputs, or an input too large."},
    415: {
        "model": ErrorResponse,
        "description": "Input of an unsupported type, or wrong request content type.",
    },
    422: {"model": ErrorResponse, "description": "Missing, empty, corrupt or truncated input."},
}


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
    metrics = ServingMetrics()
    app = FastAPI(
        title=f"mlfactory — {bundle.meta.name}",
        version=bundle.meta.version,
        description=f"Classifies {bundle.meta.modality} inputs into: "
        f"{', '.join(bundle.meta.labels)}.",
        lifespan=_lifespan(bundle, config, metrics),
    )
    app.state.bundle, app.state.settings, app.state.metrics = bundle, config, metrics
    app.state.predictor = None
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    _add_error_handlers(app)
    _add_routes(app, bundle.modality, config)
    return app


def _lifespan(bundle: Bundle, config: ServingSettings, metrics: ServingMetrics) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        prediction_log = await run_in_threadpool(PredictionLog, config.log_url)
        prediction_log.start()
        batcher = Batcher(config.max_batch_size, config.max_wait_ms, metrics.observe_batch)
        try:
            predictor = await run_in_threadpool(
                Predictor, bundle, config.ort_intra_op_threads, config.ort_inter_op_threads
            )
            batcher.start()
            metrics.watch_queues(lambda: batcher.queue_depth, lambda: prediction_log.pending)
            metrics.set_model(bundle.meta)
            app.state.batcher, app.state.prediction_log = batcher, prediction_log
            app.state.reload_lock = asyncio.Lock()  # created on the loop that will use it
            app.state.predictor = predictor
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
            await batcher.stop()
            await run_in_threadpool(prediction_log.close)

    return lifespan


def _add_routes(app: FastAPI, modality: Modality, settings: ServingSettings) -> None:
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        response_model=HealthResponse,
        responses={503: {"model": ErrorResponse}},
    )
    app.add_api_route("/v1/model", model_info, methods=["GET"], response_model=ModelInfo)
    app.add_api_route(
        "/v1/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        responses={**ERROR_RESPONSES, 503: {"model": ErrorResponse}},
        summary=f"Classify {modality.name} inputs",
        openapi_extra={
            "requestBody": predict_request_body(
                modality.api_input, settings.max_files, settings.max_text_chars
            )
        },
    )
    app.add_api_route(
        "/metrics",
        prometheus_metrics,
        methods=["GET"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    app.add_api_route(
        "/v1/admin/reload",
        reload_model,
        methods=["POST"],
        response_model=ReloadResponse,
        dependencies=[Depends(HTTPBearer(auto_error=False))],  # documents the scheme only
        responses={code: {"model": ErrorResponse} for code in (401, 403, 409, 413, 422)},
        summary="Serve another bundle (or the same one, re-read) without downtime",
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": ReloadRequest.model_json_schema()}},
            },
        },
    )


def app_from_env() -> FastAPI:
    """`create_app` on the bundle named by `MLFACTORY_BUNDLE` (for `uvicorn --factory`).

    Raises:
        BundleError: `MLFACTORY_BUNDLE` is unset or names no valid bundle.
    """
    path = os.environ.get(BUNDLE_ENV, "").strip()
    if not path:
        raise BundleError(f"{BUNDLE_ENV} is not set: set it to the bundle folder to serve")
    return create_app(path)


async def health(request: Request) -> HealthResponse:
    """Liveness and readiness: answers once the model is loaded."""
    current_predictor(request)
    return HealthResponse()


async def model_info(request: Request) -> ModelInfo:
    """The served bundle's name, version, modality, labels and metrics."""
    return ModelInfo(**request.app.state.bundle.meta.summary())


async def prometheus_metrics(request: Request) -> Response:
    """Counters, histograms and gauges in the Prometheus text format."""
    metrics: ServingMetrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE)


def _add_error_handlers(app: FastAPI) -> None:
    async def input_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InputError)
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = f"invalid request: {describe_errors(exc.errors())}"
        return JSONResponse({"detail": detail}, status_code=422)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal server error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )

    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
