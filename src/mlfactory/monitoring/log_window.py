"""Read a window of one model's logged predictions, as the arrays the drift checks take.

The prediction log is any SQLAlchemy database (SQLite by default; see
`mlfactory.serving.prediction_log`). Reading never writes: a log without tables, or without
rows of the model, is an empty window. Given the MLflow run that trained the model, rows that
another model logged under the same name and version are left out (and counted). Embeddings
are decoded from either storage format (float16 bytes, or the JSON list of rows written by older
servers), and each prediction is joined with the true label a client sent back for it
(`POST /v1/feedback`), if any.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Engine,
    and_,
    create_engine,
    func,
    inspect,
    make_url,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

from mlfactory.errors import LogDatabaseError, first_line
from mlfactory.monitoring.log_rows import decoded, embedding, json_text, numbers, probabilities
from mlfactory.monitoring.report import Window
from mlfactory.serving.log_database import connect_args, database_reason, driver_package
from mlfactory.serving.log_tables import feedback, predictions
from mlfactory.serving.settings import MAX_WINDOW_ROWS

# A window without `last`: the latest 1,000 predictions, or with a period the latest
# MAX_WINDOW_ROWS of it.
DEFAULT_WINDOW_ROWS = 1000
# Rows decoded at a time: 5,000 rows of 1,280-wide float16 embeddings are 13 MB.
CHUNK_ROWS = 5000
READ_COLUMNS = (
    "id",
    "ts",
    "request_id",
    "input_index",
    "input_summary",
    "embedding",
    "embedding_f16",
    "probabilities",
    "ood_score",
    "ood_scorer",
    "latency_ms",
)


def read_window(
    log_url: str,
    model_name: str,
    version: str,
    last: int | None = None,
    since: timedelta | None = None,
    *,
    labels: Sequence[str] | None = None,
    run_id: str | None = None,
) -> Window:
    """The logged predictions of one model version, oldest first.

    Args:
        log_url: SQLAlchemy URL of the prediction log (e.g. `sqlite:///predictions.db`).
        model_name: the bundle's name.
        version: the bundle's version.
        last: only the most recent `last` predictions.
        since: only predictions made within this long before now.
        labels: the bundle's labels: the order of the probability columns (default: the
            order in which the first row lists them).
        run_id: the MLflow run that trained the model: rows logged by a model of another run
            are left out and counted in `other_models` (rows without a run id are kept).

    Returns:
        The window; empty (`len(window) == 0`) when the log holds no such predictions.

    Raises:
        LogDatabaseError: the URL is invalid, its driver is missing, a SQLite file does not
            exist, or the database cannot be reached or read. The message is one line.
    """
    engine = open_log(log_url)
    try:
        return window_from_engine(
            engine, model_name, version, last, since, labels=labels, run_id=run_id
        )
    finally:
        engine.dispose()


def window_rows(last: int | None, since: timedelta | None) -> int:
    """The predictions a window reads: `last` when given, else the latest `DEFAULT_WINDOW_ROWS`,
    or with a period `since` the latest `MAX_WINDOW_ROWS` of it."""
    if last is not None:
        return last
    return DEFAULT_WINDOW_ROWS if since is None else MAX_WINDOW_ROWS


def period_cut_note(rows: int, last: int | None, since: str | None, option: str) -> str | None:
    """The report's note when a window of a period (`since`, no `last`) stopped at
    `MAX_WINDOW_ROWS`: it is the latest part of the period, not all of it. None otherwise.
    `option` names the caller's way to set `last` (`--last N`, `last=N`)."""
    if last is not None or since is None or rows < MAX_WINDOW_ROWS:
        return None
    return (
        f"the last {since} holds at least {MAX_WINDOW_ROWS:,} predictions: this window is the "
        f"latest {MAX_WINDOW_ROWS:,} of them, not the whole period ({option} sets the number)"
    )


def other_models_note(window: Window, model: str, run_id: str | None) -> str | None:
    """The report's note when rows of another model logged as `model` (name and version) were
    left out of the window. None otherwise."""
    if not window.other_models:
        return None
    return (
        f"{window.other_models:,} predictions logged as {model} by another model than this "
        f"bundle's (MLflow run {run_id}) are left out"
    )


def open_log(log_url: str) -> Engine:
    """An engine on an existing prediction log, for reading (nothing is created).

    Raises:
        LogDatabaseError: see `read_window`.
    """
    try:
        parsed = make_url(log_url)
    except Exception:
        message = (
            f"'{log_url}' is not an SQLAlchemy URL of a prediction log (sqlite:///FILE, "
            "postgresql+psycopg://...), nor an existing SQLite file"
        )
        raise LogDatabaseError(message) from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).expanduser().is_file():
            raise LogDatabaseError(
                f"no prediction log at '{shown}': the file does not exist "
                "(name the server's log, its MLFACTORY_LOG_URL)"
            )
    try:
        if parsed.get_backend_name() == "sqlite":
            creator = _existing_file_only(Path(parsed.database or "").expanduser())
            return create_engine(parsed, creator=creator)
        return create_engine(parsed, connect_args=connect_args(parsed, True))
    except ImportError as exc:
        raise LogDatabaseError(
            f"the database driver of '{shown}' is not installed (pip install {driver_package(exc)})"
        ) from None
    except NoSuchModuleError:
        raise LogDatabaseError(f"'{shown}' names an unknown kind of database") from None


def _existing_file_only(path: Path) -> Callable[[], sqlite3.Connection]:
    """Connections to the SQLite file `path` that SQLite opens only if it exists (`mode=rw`, as
    a URI filename; a read-only file is still read): a file is never created, whatever the
    URL's query holds (`uri=true` with other parameters made SQLite open, and create, a file
    named with them). The engine keeps the URL as given, which messages show."""
    name = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=rw"
    return lambda: sqlite3.connect(name, uri=True, check_same_thread=False)


def window_from_engine(
    engine: Engine,
    model_name: str,
    version: str,
    last: int | None = None,
    since: timedelta | None = None,
    *,
    labels: Sequence[str] | None = None,
    run_id: str | None = None,
) -> Window:
    """`read_window` on an open engine (the server reads its own log this way).

    Raises:
        LogDatabaseError: the database cannot be reached or read.
    """
    shown = engine.url.render_as_string(hide_password=True)
    others = 0
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            tables = set(inspector.get_table_names())
            if predictions.name not in tables:
                return _empty(labels)
            present = {column["name"] for column in inspector.get_columns(predictions.name)}
            if "model_run_id" not in present:
                run_id = None  # logged before run ids were: every row is the model's
            query = _query(model_name, version, last, since, present, feedback.name in tables)
            if run_id is not None:
                own = predictions.c.model_run_id
                query = query.where(or_(own.is_(None), own == run_id))
                others = connection.execute(
                    _matching(
                        select(func.count()).select_from(predictions), model_name, version
                    ).where(_within(since), own.is_not(None), own != run_id)
                ).scalar_one()
            window = _streamed(connection, query, labels, f"{model_name} {version}", last)
    except SQLAlchemyError as exc:
        message = f"cannot read the prediction log at '{shown}': {database_reason(exc)}"
        raise LogDatabaseError(message) from None
    except (ValueError, TypeError) as exc:  # a value the driver cannot convert (a bad time)
        message = f"cannot read the prediction log at '{shown}': a row is malformed: "
        raise LogDatabaseError(message + first_line(exc)) from None
    window.other_models = others
    return window


def _matching(query: Any, model_name: str, version: str) -> Any:
    return query.where(
        predictions.c.model_name == model_name, predictions.c.model_version == version
    )


def _within(since: timedelta | None) -> Any:
    """The rows of the last `since` (all rows without one)."""
    return true() if since is None else predictions.c.ts >= datetime.now(UTC) - since


def _query(
    model_name: str,
    version: str,
    last: int | None,
    since: timedelta | None,
    present: set[str],
    joined: bool,
) -> Any:
    # A log that no server of this version has opened yet lacks the newer columns: they read
    # as NULL, as they would after the server's additive upgrade.
    columns: list[Any] = [
        json_text(predictions.c[name], name) if name in present else null().label(name)
        for name in READ_COLUMNS
    ]
    source: Any = predictions
    if joined:
        columns.append(feedback.c.label.label("true_label"))
        source = predictions.outerjoin(
            feedback,
            and_(
                feedback.c.request_id == predictions.c.request_id,
                feedback.c.input_index == predictions.c.input_index,
            ),
        )
    else:  # a log that no server of this version has opened has no feedback table
        columns.append(null().label("true_label"))
    query = _matching(select(*columns).select_from(source), model_name, version)
    if since is not None:
        query = query.where(_within(since))
    if last is not None:
        return query.order_by(predictions.c.id.desc()).limit(max(last, 0))
    return query.order_by(predictions.c.id)


def _streamed(
    connection: Any, query: Any, labels: Sequence[str] | None, model: str, last: int | None
) -> Window:
    """The window of `query`'s rows, read `CHUNK_ROWS` at a time: each chunk is decoded into
    the window's arrays and dropped, so a window of 100,000 1,280-wide embeddings never holds
    the rows beside their decoded embeddings (0.5 GB). Rows come newest first with `last`
    (to take the last N), and the window is put oldest first."""
    expected = connection.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    if not expected:
        return _empty(labels)
    result = connection.execution_options(stream_results=True).execute(query)
    window: _WindowParts | None = None
    for chunk in result.partitions(CHUNK_ROWS):
        if window is None:
            window = _WindowParts(chunk[0], expected, labels, model, newest_first=last is not None)
        window.add(chunk)
        if window.full:  # rows logged since the count are not read
            break
    result.close()
    if window is None:  # every row went between the count and the read (retention)
        return _empty(labels)
    return window.done()


class _WindowParts:
    """A window being read in chunks, its arrays made once at the size the rows were counted
    and filled from the end when the rows come newest first (`LogDatabaseError` naming the
    first malformed row, if any)."""

    def __init__(
        self,
        first: Any,
        size: int,
        labels: Sequence[str] | None,
        model: str,
        newest_first: bool,
    ) -> None:
        self.model, self.newest_first = model, newest_first
        self.order = list(labels) if labels is not None else list(probabilities(first, model))
        self.embeddings = np.empty((size, len(embedding(first, model))), np.float32)
        self.probabilities = np.empty((size, len(self.order)), np.float64)
        self.rows: list[tuple[Any, ...]] = []  # the small values of each row

    @property
    def full(self) -> bool:
        return len(self.rows) == len(self.embeddings)

    def add(self, chunk: Sequence[Any]) -> None:
        chunk = chunk[: len(self.embeddings) - len(self.rows)]
        start, width = len(self.rows), self.embeddings.shape[1]
        for n, row in enumerate(chunk, start):
            i = len(self.embeddings) - 1 - n if self.newest_first else n
            values = embedding(row, self.model)
            if len(values) != width:
                raise LogDatabaseError(
                    f"the log's embeddings of {self.model} are {width} and {len(values)} wide: "
                    "another model logged rows under the same name and version"
                )
            self.embeddings[i] = values
            given = probabilities(row, self.model)
            self.probabilities[i] = [given.get(label, 0.0) for label in self.order]
        scores = numbers(chunk, "ood_score", self.model, nullable=True)
        latencies = numbers(chunk, "latency_ms", self.model)
        for row, score, latency in zip(chunk, scores, latencies, strict=True):
            summary = decoded(row, "input_summary", dict, self.model)
            when, index = _utc(row.ts), row.input_index
            self.rows.append(
                (
                    summary,
                    when,
                    row.true_label,
                    score,
                    row.ood_scorer,
                    latency,
                    row.request_id,
                    index,
                )
            )

    def done(self) -> Window:
        size, n = len(self.embeddings), len(self.rows)
        # fewer rows than counted (deleted meanwhile): the part filled, a view (no copy)
        kept = slice(size - n, size) if self.newest_first else slice(0, n)
        rows = self.rows[::-1] if self.newest_first else self.rows
        columns = list(zip(*rows, strict=True))
        scores = columns[3]
        return Window(
            embeddings=self.embeddings[kept],
            probabilities=self.probabilities[kept],
            summaries=list(columns[0]),
            timestamps=list(columns[1]),
            true_labels=list(columns[2]),
            ood_scores=None if None in scores else np.array(scores, np.float64),
            ood_scorers=list(columns[4]),
            latency_ms=np.array(columns[5], dtype=np.float64),
            request_ids=list(columns[6]),
            input_indices=list(columns[7]),
        )


def _empty(labels: Sequence[str] | None) -> Window:
    return Window(
        embeddings=np.zeros((0, 0), np.float32),
        probabilities=np.zeros((0, len(labels or ())), np.float64),
        summaries=[],
        true_labels=[],
        ood_scores=np.zeros(0),
        latency_ms=np.zeros(0),
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the log writes UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
