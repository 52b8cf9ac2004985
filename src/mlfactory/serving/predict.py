"""`POST /v1/predict`: read the inputs, encode them, batch them through the model, log, answer.

The event loop only streams the body and awaits: decoding and preprocessing run in the request
threadpool, at most `max_concurrent_decodes` requests at once per worker (`DecodeGate`: a
decoded image may take hundreds of MiB, and the thread pool runs up to 40), the model call in
the batcher's runner thread, the log commit in the log's writer thread. A prediction is
answered only after its log row is committed (see `prediction_log`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mlfactory.errors import InputError
from mlfactory.modalities import Modality
from mlfactory.predictor import BatchOutput, Prediction, Predictor
from mlfactory.serving.batcher import Batcher, BatcherStopped
from mlfactory.serving.input_store import InputStore, input_digest
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.monitoring import OodScores, ood_scores
from mlfactory.serving.prediction_log import LoggedPrediction, PredictionLog, PredictionLogError
from mlfactory.serving.schemas import (
    ErrorResponse,
    ModelRef,
    PredictionOut,
    PredictResponse,
    TextsRequest,
    predict_request_body,
)
from mlfactory.serving.settings import ServingSettings
from mlfactory.serving.uploads import check_body_headers, read_json_body, read_uploads
from mlfactory.serving.validation_errors import describe_errors

log = logging.getLogger(__name__)
Encoded = dict[str, np.ndarray]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "Malformed HTTP request (Content-Length), or a Host not allowed.",
    },
    408: {"model": ErrorResponse, "description": "The request body stopped arriving."},
    413: {"model": ErrorResponse, "description": "Too many inputs, or an input too large."},
    415: {
        "model": ErrorResponse,
        "description": "Input of an unsupported type, or wrong request content type.",
    },
    422: {"model": ErrorResponse, "description": "Missing, empty, corrupt or truncated input."},
    503: {"model": ErrorResponse, "description": "Not ready, shutting down, or not logged."},
}


def predict_router(modality: Modality, settings: ServingSettings) -> APIRouter:
    """The router of `POST /v1/predict`, documenting the request body of `modality`'s inputs.

    The documented limits are the server's own, so the router is made per app.
    """
    router = APIRouter()
    router.add_api_route(
        "/v1/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        responses=ERROR_RESPONSES,
        summary=f"Classify {modality.name} inputs",
        openapi_extra={
            "requestBody": predict_request_body(
                modality.api_input, settings.max_files, settings.max_text_chars
            )
        },
    )
    return router


async def predict(request: Request) -> PredictResponse:
    """Classify the request's inputs (files, or texts for text bundles), in order."""
    started = time.perf_counter()
    state = request.app.state
    settings: ServingSettings = state.settings
    predictor = current_predictor(request)
    read_inputs = INPUT_READERS[predictor.bundle.modality.api_input.kind]
    inputs = await read_inputs(request, settings)
    encoded, summaries, digests = await decode_gate(request).encode(predictor, inputs)
    batcher: Batcher = state.batcher
    try:
        output = await batcher.run(predictor, encoded)
    except BatcherStopped:
        raise HTTPException(503, "the server is shutting down; retry on another instance") from None
    predictor.check_finite(output, [name for name, _ in inputs])
    ood = ood_scores(predictor, output)
    latency_ms = (time.perf_counter() - started) * 1000.0
    predictions = predictor.to_predictions(output.probabilities)
    rows = log_rows(request, predictor, predictions, output, summaries, digests, latency_ms, ood)
    prediction_log: PredictionLog = state.prediction_log
    metrics: ServingMetrics = state.metrics
    store: InputStore | None = state.input_store
    # Kept before logged, by the log's writer thread: an answered input is always in the store.
    keep = None if store is None else partial(store.keep, [raw for _, raw in inputs], digests)
    try:
        await prediction_log.write(rows, before_commit=keep)
    except OSError as exc:
        log.error("input not kept in %s: %s", settings.input_store, exc)
        metrics.log_write_errors.inc()
        raise HTTPException(503, "the input could not be kept; retry shortly") from None
    except PredictionLogError:
        # Unlogged predictions are never answered: the log is the record of what was served.
        metrics.log_write_errors.inc()
        raise HTTPException(503, "the prediction could not be logged; retry shortly") from None
    request.state.request_id = rows[0].request_id  # new if another request had taken it
    for prediction in predictions:
        metrics.predictions.labels(prediction.label).inc()
    outside = sum(inside is False for inside in ood[1])
    if outside:
        metrics.count_ood(outside)
    state.drift_watch.count(len(predictions))
    meta = predictor.bundle.meta
    return PredictResponse(
        request_id=rows[0].request_id,
        model=ModelRef(name=meta.name, version=meta.version),
        predictions=[
            PredictionOut(
                label=p.label,
                score=p.score,
                probabilities=p.probabilities,
                ood_score=score,
                in_distribution=inside,
            )
            for p, score, inside in zip(predictions, *ood, strict=True)
        ],
    )


def current_predictor(request: Request) -> Predictor:
    """The predictor serving new requests (503 while none is loaded)."""
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise HTTPException(503, "the model is not loaded yet; retry shortly")
    return predictor


class DecodeGate:
    """Lets at most `limit` requests of a worker decode and preprocess their inputs at once
    (`MLFACTORY_MAX_CONCURRENT_DECODES`), so decoded pixels take at most `limit` times one
    request's worth of memory; the other requests wait, in order, holding only their bodies.

    `in_flight` and `waiting` count the requests decoding now and those waiting for a slot, as
    the `mlfactory_decodes_in_progress` and `mlfactory_decodes_waiting` gauges do; `peak` is
    the most that ever decoded at once.
    """

    def __init__(self, limit: int, metrics: ServingMetrics) -> None:
        self.limit = limit
        self.slots = asyncio.Semaphore(limit)
        self.metrics = metrics
        self.in_flight = 0
        self.waiting = 0
        self.peak = 0

    async def encode(
        self, predictor: Predictor, inputs: list[tuple[str, bytes]]
    ) -> tuple[list[Encoded], list[dict[str, object]], list[str]]:
        """`encode_inputs` in the request thread pool, once a slot is free."""
        await self._take_slot()
        try:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.metrics.decodes_in_progress.inc()
            try:
                return await run_in_threadpool(encode_inputs, predictor, inputs)
            finally:
                self.in_flight -= 1
                self.metrics.decodes_in_progress.dec()
        finally:
            self.slots.release()

    async def _take_slot(self) -> None:
        if not self.slots.locked():  # a slot is free: taken without waiting, nothing to count
            await self.slots.acquire()
            return
        self.waiting += 1
        self.metrics.decodes_waiting.inc()
        try:  # a client that hangs up while waiting is cancelled here, and counted out
            await self.slots.acquire()
        finally:
            self.waiting -= 1
            self.metrics.decodes_waiting.dec()


def decode_gate(request: Request) -> DecodeGate:
    """The app's `DecodeGate`, made at its first request (in the event loop it serves)."""
    state = request.app.state
    gate: DecodeGate | None = getattr(state, "decode_gate", None)
    if gate is None:
        settings: ServingSettings = state.settings
        gate = state.decode_gate = DecodeGate(settings.max_concurrent_decodes, state.metrics)
    return gate


def encode_inputs(
    predictor: Predictor, inputs: list[tuple[str, bytes]]
) -> tuple[list[Encoded], list[dict[str, object]], list[str]]:
    """Encode named raw inputs, summarise them and hash them (`input_digest`) for the log
    (blocking: call in a thread).

    Raises:
        InputError: an input cannot be decoded; the message starts with its name.
    """
    meta, modality = predictor.bundle.meta, predictor.bundle.modality
    encoded, summaries = [], []
    for name, raw in inputs:
        try:
            item = predictor.encode(raw)
        except InputError as exc:
            raise InputError(f"{name}: {exc}", exc.status_code) from None
        except Exception as exc:  # decoders of untrusted bytes raise many exception types
            log.warning("could not decode %s", name, exc_info=True)
            raise InputError(f"{name}: could not be decoded ({type(exc).__name__})", 422) from None
        encoded.append(item)
        summaries.append(modality.summarize(raw, item, meta.preprocessing))
    return encoded, summaries, [input_digest(raw) for _, raw in inputs]


def log_rows(
    request: Request,
    predictor: Predictor,
    predictions: list[Prediction],
    output: BatchOutput,
    summaries: list[dict[str, object]],
    digests: list[str],
    latency_ms: float,
    ood: OodScores,
) -> list[LoggedPrediction]:
    """One prediction-log row per input (`digests`: each input's `input_digest`; `ood`: each
    input's score and verdict, or Nones), under the request's id (`request.state`).

    The rows of one request share one time: the request's answer.
    """
    meta, now = predictor.bundle.meta, datetime.now(UTC)
    request_id: str = request.state.request_id
    requested_id: str | None = request.state.requested_id
    return [
        LoggedPrediction(
            request_id=request_id,
            requested_id=requested_id,
            input_index=index,
            model_name=meta.name,
            model_version=meta.version,
            model_run_id=meta.mlflow_run_id,
            data_fingerprint=meta.data_fingerprint,
            input_summary=summary,
            embedding=embedding,  # made bytes by the log's writer thread, off the event loop
            probabilities=prediction.probabilities,
            label=prediction.label,
            score=prediction.score,
            latency_ms=round(latency_ms, 3),
            ood_score=ood_score,
            in_distribution=inside,
            ood_scorer=None if ood_score is None else predictor.scorer_fingerprint,
            input_sha256=digest,
            ts=now,
        )
        for index, (prediction, summary, digest, embedding, ood_score, inside) in enumerate(
            zip(predictions, summaries, digests, output.embeddings, *ood, strict=True)
        )
    ]


async def _read_files(request: Request, settings: ServingSettings) -> list[tuple[str, bytes]]:
    """Named inputs of a multipart body (field `files`), for modalities whose inputs are files."""
    check_body_headers(request.headers, settings.max_request_bytes)
    uploads = await read_uploads(request.headers.get("content-type"), request.stream(), settings)
    return [(upload.describe(), upload.data) for upload in uploads]


async def _read_texts(request: Request, settings: ServingSettings) -> list[tuple[str, bytes]]:
    """Named inputs of a JSON body (`texts` or `text`), for modalities whose inputs are texts."""
    example = '{"texts": ["..."]} or {"text": "..."}'
    body = await read_json_body(request, settings.max_request_bytes, example)
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


# How each kind of API input (`ApiInput.kind`) is read from a request.
INPUT_READERS = {"files": _read_files, "texts": _read_texts}
