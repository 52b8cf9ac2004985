"""The HTTP API: one bundle served with FastAPI and ONNX Runtime. Torch is never imported here.

The bundle's metadata is read when the app is created; its ONNX session is built once, at
start-up (lifespan). Decoding, preprocessing and the ONNX call run in the threadpool, never on
the event loop. Every error a client can cause is a 4xx whose JSON `detail` is one sentence.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mlfactory.bundle import load_bundle
from mlfactory.errors import BundleError, InputError
from mlfactory.predictor import Prediction, Predictor
from mlfactory.serving.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ModelRef,
    PredictionOut,
    PredictResponse,
    TextsRequest,
    predict_request_body,
)
from mlfactory.serving.settings import ServingSettings
from mlfactory.serving.uploads import check_content_length, media_type, read_body, read_uploads

BUNDLE_ENV = "MLFACTORY_BUNDLE"
log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed HTTP request (Content-Length)."},
    413: {"model": ErrorResponse, "description": "Too many inputs, or an input too large."},
    415: {"model": ErrorResponse, "description": "Not an image / wrong request content type."},
    422: {"model": ErrorResponse, "description": "Missing, empty, corrupt or truncated input."},
}


def create_app(bundle_path: str | Path, settings: ServingSettings | None = None) -> FastAPI:
    """The FastAPI application serving one bundle.

    Args:
        bundle_path: the bundle folder (or its `bundle.json`).
        settings: limits and runtime options (default: `ServingSettings.from_env()`).

    Raises:
        BundleError: the bundle is missing or incomplete.
    """
    bundle = load_bundle(bundle_path)
    config = settings or ServingSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        app.state.predictor = await run_in_threadpool(
            Predictor, bundle, config.ort_intra_op_threads
        )
        log.info(
            "loaded bundle %s %s from %s in %.2f s",
            bundle.meta.name,
            bundle.meta.version,
            bundle.path,
            time.perf_counter() - started,
        )
        yield
        app.state.predictor = None

    app = FastAPI(
        title=f"mlfactory — {bundle.meta.name}",
        version=bundle.meta.version,
        description=f"Classifies {bundle.meta.modality} inputs into: "
        f"{', '.join(bundle.meta.labels)}.",
        lifespan=lifespan,
    )
    app.state.bundle, app.state.settings, app.state.predictor = bundle, config, None
    _add_error_handlers(app)
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
        responses=ERROR_RESPONSES,
        summary=f"Classify {bundle.meta.modality} inputs",
        openapi_extra={"requestBody": predict_request_body(bundle.meta.modality)},
    )
    return app


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
    _predictor(request)
    return HealthResponse()


async def model_info(request: Request) -> ModelInfo:
    """The served bundle's name, version, modality, labels and metrics."""
    return ModelInfo(**request.app.state.bundle.meta.summary())


async def predict(request: Request) -> PredictResponse:
    """Classify the request's inputs (files, or texts for text bundles), in order."""
    settings: ServingSettings = request.app.state.settings
    predictor = _predictor(request)
    check_content_length(request.headers.get("content-length"), settings.max_request_bytes)
    if predictor.bundle.meta.modality == "text":
        inputs = await _read_texts(request, settings)
    else:
        uploads = await read_uploads(
            request.headers.get("content-type"), request.stream(), settings
        )
        inputs = [(upload.describe(), upload.data) for upload in uploads]
    predictions = await run_in_threadpool(classify, predictor, inputs)
    meta = predictor.bundle.meta
    return PredictResponse(
        model=ModelRef(name=meta.name, version=meta.version),
        predictions=[
            PredictionOut(label=p.label, score=p.score, probabilities=p.probabilities)
            for p in predictions
        ],
    )


def classify(predictor: Predictor, inputs: list[tuple[str, bytes]]) -> list[Prediction]:
    """Encode named raw inputs and classify them as one batch (blocking: call in a thread).

    Raises:
        InputError: an input cannot be decoded; the message starts with its name.
    """
    encoded = []
    for name, raw in inputs:
        try:
            encoded.append(predictor.encode(raw))
        except InputError as exc:
            raise InputError(f"{name}: {exc}", exc.status_code) from None
        except Exception as exc:  # decoders of untrusted bytes raise many exception types
            log.warning("could not decode %s", name, exc_info=True)
            raise InputError(f"{name}: could not be decoded ({type(exc).__name__})", 422) from None
    return predictor.to_predictions(predictor.run(encoded).probabilities)


async def _read_texts(request: Request, settings: ServingSettings) -> list[tuple[str, bytes]]:
    kind = media_type(request.headers.get("content-type"))
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise InputError(
            f"unsupported content type '{kind}': send application/json like "
            '{"texts": ["..."]} or {"text": "..."}',
            415,
        )
    body = await read_body(request.stream(), settings.max_request_bytes)
    try:
        texts = TextsRequest.model_validate_json(body).items()
    except ValidationError as exc:
        raise InputError(f"invalid JSON body: {describe_errors(exc.errors())}", 422) from None
    if not texts:
        raise InputError("no texts: 'texts' is an empty list", 422)
    if len(texts) > settings.max_files:
        raise InputError(f"too many texts: at most {settings.max_files} per request", 413)
    for index, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"text {index} is empty", 422)
        if len(text) > settings.max_text_chars:
            raise InputError(
                f"text {index} has {len(text)} characters; the limit is {settings.max_text_chars}",
                413,
            )
    return [(f"text {index}", text.encode("utf-8")) for index, text in enumerate(texts)]


def _predictor(request: Request) -> Predictor:
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise HTTPException(503, "the model is not loaded yet; retry shortly")
    return predictor


def describe_errors(errors: Sequence[Any]) -> str:
    """One sentence from pydantic/FastAPI validation errors (first error, plus a count)."""
    if not errors:
        return "the request is invalid"
    first = errors[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    sentence = f"{location}: {message}" if location else message
    if len(errors) > 1:
        sentence += f" (and {len(errors) - 1} more problem(s))"
    return sentence


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
