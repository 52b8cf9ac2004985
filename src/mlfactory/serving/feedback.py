"""`POST /v1/feedback`: the true label of a served prediction, when it becomes known.

A client sends back `{"request_id", "input_index", "label"}` (or a list of them) for inputs it
had predicted. Each label is stored beside the logged prediction, in the log's `feedback` table:
sending the same input again replaces its label (the last one wins), so retries are harmless.
Live accuracy (`GET /v1/monitoring/drift`, `mlfactory monitor`) is computed over the labelled
predictions of a window.

A list is stored whole or not at all: an unknown request id or input is 404, a label that the
model that made the prediction does not have is 422, a request id that names different inputs
of several requests (clients that chose the same `X-Request-ID`: see `request_ids`) is 409,
each with a JSON `detail`. The body is
limited to `MAX_BODY_BYTES` and `MAX_ITEMS` labels. Before the server has started, or when the
log's database fails (busy past its timeout, unreachable), the answer is 503 and nothing is
stored: the client retries, as it does a prediction that could not be logged.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from mlfactory.errors import InputError
from mlfactory.serving.auth import MONITOR_GUARD, MONITOR_GUARD_ERRORS
from mlfactory.serving.log_database import database_reason
from mlfactory.serving.log_tables import feedback, predictions
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.predict import current_predictor
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.schemas import (
    ErrorResponse,
    FeedbackIn,
    FeedbackResponse,
)
from mlfactory.serving.uploads import read_json_body
from mlfactory.serving.validation_errors import describe_errors

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 1000
# One label or a list of them, told apart by the body's first character, so that an error
# names what is wrong with the one the client sent (a union's reads both ways).
_ONE, _LIST = TypeAdapter(FeedbackIn), TypeAdapter(list[FeedbackIn])
# The documented body, written out without `$defs` (which an OpenAPI document cannot resolve).
_ITEM_SCHEMA = FeedbackIn.model_json_schema()
BODY_SCHEMA = {
    "anyOf": [_ITEM_SCHEMA, {"type": "array", "items": _ITEM_SCHEMA, "minItems": 1}],
}

FEEDBACK_EXAMPLE = 'an object {"request_id", "label", "input_index"} or a list of them'
router = APIRouter()


@router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    dependencies=MONITOR_GUARD,
    responses={
        404: {"model": ErrorResponse, "description": "No logged prediction with that id."},
        409: {"model": ErrorResponse, "description": "The id names several requests' inputs."},
        413: {"model": ErrorResponse, "description": "Body over 1 MiB or 1,000 labels."},
        415: {"model": ErrorResponse, "description": "A body declared as other than JSON."},
        422: {"model": ErrorResponse, "description": "Malformed body, or an unknown label."},
        503: {"model": ErrorResponse, "description": "Not ready, or the log cannot store it."},
        **MONITOR_GUARD_ERRORS,
    },
    summary="Send the true label of a served prediction",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BODY_SCHEMA}},
        }
    },
)
async def send_feedback(request: Request) -> FeedbackResponse:
    """Store the true label of one or more logged predictions (the last label sent wins)."""
    current_predictor(request)  # 503 until start-up has opened the log
    items = _parsed(await read_json_body(request, MAX_BODY_BYTES, FEEDBACK_EXAMPLE))
    if not items:
        raise InputError("no feedback: the list is empty", 422)
    if len(items) > MAX_ITEMS:
        raise InputError(f"too many labels: at most {MAX_ITEMS} per request", 413)
    prediction_log: PredictionLog = request.app.state.prediction_log
    try:
        stored = await run_in_threadpool(store_feedback, prediction_log.engine, items)
    except SQLAlchemyError as exc:  # locked past its busy timeout, unreachable: nothing stored
        log.error("could not store feedback in the prediction log: %s", database_reason(exc))
        metrics: ServingMetrics = request.app.state.metrics
        metrics.log_write_errors.inc()
        raise HTTPException(503, "the feedback could not be stored; retry shortly") from None
    request.app.state.drift_watch.count(stored)  # the live accuracy gauge changes with them
    return FeedbackResponse(stored=stored)


def _parsed(body: bytes) -> list[FeedbackIn]:
    """The labels of a body that holds one label object or a list of them.

    Raises:
        InputError: 422 naming the first problem (a field, or an item of the list and its
            field, such as `1.label: Field required`).
    """
    first = body.lstrip()[:1]
    try:
        if first == b"[":
            return _LIST.validate_json(body)
        if first == b"{":
            return [_ONE.validate_json(body)]
    except ValidationError as exc:
        raise InputError(f"invalid JSON body: {describe_errors(exc.errors())}", 422) from None
    raise InputError(f"invalid JSON body: send {FEEDBACK_EXAMPLE}", 422)


def store_feedback(engine: Engine, items: Sequence[FeedbackIn]) -> int:
    """Check every item against the log, then store them all in one transaction.

    Returns:
        How many labels were stored (the same input twice in `items` counts once: the last).

    Raises:
        InputError: 404 for an input that was never predicted, 422 for a label that the
            model which predicted it does not have.
    """
    latest = {(item.request_id, item.input_index): item.label for item in items}
    labels = _logged_labels(engine, list(latest))
    now = datetime.now(UTC)
    rows = []
    for (request_id, index), label in latest.items():
        known = labels.get((request_id, index))
        if known is None:
            raise InputError(_unknown(request_id, index, labels), 404)
        rows.append(
            {
                "request_id": request_id,
                "input_index": index,
                "ts": now,
                "label": _model_spelling(label, known, request_id),
            }
        )
    try:
        _replace(engine, rows)
    except IntegrityError:  # a concurrent request stored the same input first: replace it
        _replace(engine, rows)
    return len(rows)


def _model_spelling(label: str, known: list[str], request_id: str) -> str:
    """The model's label that `label` names, compared in Unicode's composed form (NFC), so that
    `café` typed on a Mac (decomposed) is the model's `café`.

    Raises:
        InputError: 422 when the model has no such label.
    """
    composed = {unicodedata.normalize("NFC", k): k for k in known}
    spelling = composed.get(unicodedata.normalize("NFC", label))
    if spelling is None:
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise InputError(
            f"label {label!r} is not one of the model's labels ({shown}) "
            f"for request {request_id!r}",
            422,
        )
    return spelling


def _logged_labels(engine: Engine, keys: list[tuple[str, int]]) -> dict[tuple[str, int], list[str]]:
    """(request id, input index) -> the labels of the model that predicted it (of every model
    that did, where two logged the same input under one id: a log shared by two servers).

    Raises:
        InputError: 409 when the id names different inputs at that position: requests whose
            client chose the same id (`taken_ids.give_taken_ids_new_ones` gave the later
            ones new ids, but a client labelling by its own id could mean any of them), or,
            in a log written before ids were made unique, several requests under one id.
    """
    ids = {request_id for request_id, _ in keys}
    columns = (predictions.c.input_index, predictions.c.input_sha256)
    logged = select(predictions.c.request_id, *columns, predictions.c.probabilities)
    namesakes = select(predictions.c.requested_id, *columns).where(
        predictions.c.requested_id.in_(ids), predictions.c.request_id != predictions.c.requested_id
    )
    labels: dict[tuple[str, int], dict[str, None]] = {}
    inputs: dict[tuple[str, int], list[str | None]] = {}
    with engine.connect() as connection:
        for row in connection.execute(logged.where(predictions.c.request_id.in_(ids))):
            key = (row.request_id, row.input_index)
            labels.setdefault(key, {}).update(dict.fromkeys(row.probabilities))
            inputs.setdefault(key, []).append(row.input_sha256)
        for other in connection.execute(namesakes):
            inputs.setdefault((other.requested_id, other.input_index), []).append(
                other.input_sha256
            )
    for request_id, index in keys:
        digests = inputs.get((request_id, index), [])
        if (request_id, index) in labels and len(digests) > 1 and _not_one_input(digests):
            raise InputError(
                f"request id {request_id!r} was sent with {len(digests)} requests, which had "
                f"different inputs at position {index}: label it with the `request_id` its "
                "prediction's response returned (a request whose X-Request-ID was taken got "
                "a new one)",
                409,
            )
    return {key: list(known) for key, known in labels.items()}


def _not_one_input(digests: list[str | None]) -> bool:
    """Whether logged inputs' SHA-256s (None: logged before they were kept) may differ."""
    return None in digests or len(set(digests)) > 1


def _unknown(request_id: str, index: int, known: dict[tuple[str, int], Any]) -> str:
    inputs = sorted(i for r, i in known if r == request_id)
    if not inputs:
        return f"no logged prediction has request id {request_id!r}"
    return f"request {request_id!r} has inputs 0 to {inputs[-1]}, not {index}"


def _replace(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Delete each input's earlier label and insert the new ones, in one transaction."""
    earlier = delete(feedback).where(
        feedback.c.request_id == bindparam("old_request_id"),
        feedback.c.input_index == bindparam("old_input_index"),
    )
    keys = [
        {"old_request_id": row["request_id"], "old_input_index": row["input_index"]} for row in rows
    ]
    with engine.begin() as connection:
        connection.execute(earlier, keys)
        connection.execute(insert(feedback), rows)
