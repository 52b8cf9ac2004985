"""The true labels of one model's predictions in the prediction log, as `mlfactory collect`
writes them out (`collect_command`).

A label joins a prediction by its request id and input index (`POST /v1/feedback`). The server
gives a request whose `X-Request-ID` is already logged an id of its own, but a log written
before it did may hold two models' predictions under one id, where a label joins both: one
that is not among this model's labels is another model's, counted and left out. Predictions
logged before the log had `input_sha256` (the column is NULL, or absent in a log of the older
layout) name no kept input: counted and left out too.

The log keeps one label per prediction (a correction sent for the same request replaces it in
place), so an input counts as relabelled only when it was sent in several requests that got
different labels; a correction of one request's label leaves no trace to count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, inspect, null, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from mlfactory.errors import LogDatabaseError, MlfactoryError
from mlfactory.monitor_command import check_log_tables, logged_models
from mlfactory.monitoring.log_rows import decoded, json_text
from mlfactory.monitoring.log_window import open_log
from mlfactory.serving.log_database import database_reason
from mlfactory.serving.log_tables import feedback, predictions

MODELS_LISTED = 5  # the other models an error names, at most (as `monitor`'s)


class NothingToCollect(MlfactoryError):
    """The log holds no prediction of the model, none labelled, or none usable."""


@dataclass
class LabelledInputs:
    """The labelled inputs of one model that the log names (see the module docstring)."""

    latest: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # each input's SHA-256 -> (its latest label, its input summary)
    relabelled: int = 0  # inputs whose requests got different labels
    not_the_models: int = 0  # labelled predictions whose label is not one of the model's
    not_kept: int = 0  # labelled predictions with no input_sha256 (logged before it existed)


def read_labelled(
    log_url: str,
    model_name: str,
    labels: list[str],
    cutoff: datetime | None,
    since: str | None = None,
) -> LabelledInputs:
    """The labelled inputs of the model `model_name` (every version) in the log at `log_url`.

    Args:
        log_url: the prediction log's URL.
        model_name: the model's name.
        labels: the model's labels: any other label is left out (and counted).
        cutoff: only labels sent at or after this moment.
        since: how `cutoff` was given (`30d`), for the error when no label is that recent.

    Raises:
        NothingToCollect: the log holds no prediction of the model, or none labelled (within
            `since`).
        LogDatabaseError: the log cannot be opened or read, or is another database.
    """
    engine = open_log(log_url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            rows, predicted = _labelled_rows(connection, shown, model_name, cutoff)
    except SQLAlchemyError as exc:
        message = f"cannot read the prediction log at '{shown}': {database_reason(exc)}"
        raise LogDatabaseError(message) from None
    finally:
        engine.dispose()
    if not rows:
        raise NothingToCollect(_nothing_labelled(log_url, shown, model_name, predicted, since))
    return _latest(rows, model_name, set(labels))


def _labelled_rows(
    connection: Connection, shown: str, model_name: str, cutoff: datetime | None
) -> tuple[list[Any], int]:
    """The model's labelled predictions (id, input_sha256, input_summary, label), the oldest
    label first; and, when there is none, how many predictions of the model the log holds."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    check_log_tables(tables, shown)
    if predictions.name not in tables:
        return [], 0
    own = predictions.c.model_name == model_name
    columns = {c["name"] for c in inspector.get_columns(predictions.name)}
    rows: list[Any] = []
    if feedback.name in tables:
        digest = predictions.c.input_sha256 if "input_sha256" in columns else null()
        query = (
            select(
                predictions.c.id,
                digest.label("input_sha256"),
                json_text(predictions.c.input_summary, "input_summary"),
                feedback.c.label,
            )
            .select_from(
                predictions.join(
                    feedback,
                    and_(
                        feedback.c.request_id == predictions.c.request_id,
                        feedback.c.input_index == predictions.c.input_index,
                    ),
                )
            )
            .where(own)
            .order_by(feedback.c.ts, feedback.c.id)
        )
        if cutoff is not None:
            query = query.where(feedback.c.ts >= cutoff)
        rows = list(connection.execute(query).all())
    if rows:
        return rows, 0
    count = select(func.count()).select_from(predictions).where(own)
    return rows, int(connection.execute(count).scalar_one())


def _latest(rows: list[Any], model_name: str, labels: set[str]) -> LabelledInputs:
    """Each kept input's latest label among `rows` (oldest first), and what is left out."""
    found = LabelledInputs()
    labels_seen: dict[str, set[str]] = {}
    for row in rows:
        if row.label not in labels:
            found.not_the_models += 1
            continue
        if row.input_sha256 is None:
            found.not_kept += 1
            continue
        # a malformed summary: one line naming its row, as `monitor` says it
        summary = decoded(row, "input_summary", dict, model_name) if row.input_summary else {}
        found.latest[row.input_sha256] = (row.label, summary)
        labels_seen.setdefault(row.input_sha256, set()).add(row.label)
    found.relabelled = sum(len(seen) > 1 for seen in labels_seen.values())
    return found


def _nothing_labelled(
    log_url: str, shown: str, model_name: str, predicted: int, since: str | None
) -> str:
    """Why the log gives nothing to collect, as `monitor` says it of an empty window."""
    where = f"the log at {shown}"
    if predicted:
        within = f" in the last {since}" if since is not None else ""
        return (
            f"nothing labelled to collect: no label was sent{within} for the {predicted:,} "
            f"predictions of {model_name} in {where} (POST /v1/feedback)"
        )
    models = logged_models(log_url)
    if not models:
        return f"{where} is empty: no prediction was logged yet (is the server writing there?)"
    held = ", ".join(f"{model} {version} ({n:,})" for model, version, n in models[:MODELS_LISTED])
    more = f" and {len(models) - MODELS_LISTED} more" if len(models) > MODELS_LISTED else ""
    return f"no prediction of {model_name} in {where}; it holds {held}{more}"
