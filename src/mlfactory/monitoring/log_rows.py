"""Decoding the prediction log's rows for a window, with one clear error for a malformed row.

The server writes every row itself, so a row it could not have written (JSON cut short, a list
where the probabilities are a mapping, embedding bytes of an odd length) means that the log
was edited or damaged. Such a row is refused, not skipped: a window that silently left rows
out would give checks over an unknown part of the traffic. The error names the row's id and
column, so that the row can be mended or deleted (`DELETE FROM predictions WHERE id = N`).

The JSON columns are read as text (`json_text`) and decoded here, row by row, because the
driver's decoder would fail on the first malformed value without saying which row it was in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
from sqlalchemy import Text, cast

from mlfactory.errors import LogDatabaseError, first_line
from mlfactory.serving.log_tables import EMBEDDING_DTYPE

# The log's columns that hold JSON: read as text, decoded by `decoded`.
JSON_COLUMNS = frozenset({"input_summary", "embedding", "probabilities"})


def json_text(column: Any, name: str) -> Any:
    """`column` in a query, as the JSON text it holds when it is a JSON column."""
    return cast(column, Text).label(name) if name in JSON_COLUMNS else column


def malformed(row: Any, column: str, why: str, model: str) -> LogDatabaseError:
    """The one-line error for a row of `model` whose `column` cannot be read."""
    return LogDatabaseError(
        f"row {row.id} of the prediction log ({model}) is malformed: its {column} {why}; "
        f"mend or delete that row (DELETE FROM predictions WHERE id = {row.id})"
    )


def decoded(row: Any, column: str, kind: type, model: str) -> Any:
    """The JSON value of `row`'s `column`, which must be a `kind` (dict or list)."""
    value = getattr(row, column)
    if isinstance(value, str | bytes | bytearray):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise malformed(row, column, f"is not valid JSON ({first_line(exc)})", model) from None
    if not isinstance(value, kind):
        shown = "null" if value is None else type(value).__name__
        what = "an object" if kind is dict else "a list"
        raise malformed(row, column, f"is {shown}, not {what}", model)
    return value


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def probabilities(row: Any, model: str) -> dict[str, float]:
    """`row`'s probabilities: an object of labels to numbers."""
    values: dict[str, Any] = decoded(row, "probabilities", dict, model)
    wrong = next((label for label, p in values.items() if not _number(p)), None)
    if wrong is not None:
        shown = json.dumps(values[wrong])[:40]
        raise malformed(row, "probabilities", f"give label {wrong!r} {shown}, not a number", model)
    return values


def embedding(row: Any, model: str) -> np.ndarray:
    """`row`'s embedding as float32: from its float16 bytes, or the JSON list of an old row."""
    if row.embedding_f16 is not None:
        if len(row.embedding_f16) % EMBEDDING_DTYPE.itemsize:
            why = f"is {len(row.embedding_f16)} bytes, not float16 values"
            raise malformed(row, "embedding_f16", why, model)
        return np.frombuffer(row.embedding_f16, dtype=EMBEDDING_DTYPE).astype(np.float32)
    values = decoded(row, "embedding", list, model)
    if not all(_number(value) for value in values):
        raise malformed(row, "embedding", "holds a value that is not a number", model)
    return np.asarray(values, dtype=np.float32)


def numbers(rows: Sequence[Any], column: str, model: str, nullable: bool = False) -> list[Any]:
    """The rows' values of a numeric `column` (None kept where `nullable`)."""
    values = [getattr(row, column) for row in rows]
    for row, value in zip(rows, values, strict=True):
        if not (_number(value) or (nullable and value is None)):
            raise malformed(row, column, f"is {str(value)[:40]!r}, not a number", model)
    return values
