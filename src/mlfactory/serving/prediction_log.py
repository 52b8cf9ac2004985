"""The prediction log: every answered prediction, durably, in SQL (SQLite by default).

A prediction counts as answered only once its row is committed: the request hands its rows to
one writer thread and awaits the commit before it responds. The writer group-commits the rows
of every request that queued while the previous commit ran, so the event loop never blocks on
the database and a busy server pays one commit per group, not per request. A request may hand
over a step that must succeed before its rows are committed (keeping its inputs: see
`serving.input_store`); the writer runs it, so the request pays no thread hop of its own.

A request id names one request. A client may choose its request's id (`X-Request-ID`, kept in
`requested_id`), and may choose one that a logged prediction already has (a retry, a client
reusing ids, or one guessing another's): its rows would then share the id with another
request's, and a label sent for that id (`POST /v1/feedback`) would join both. So the writer,
in the transaction that commits them, gives the rows of a request whose chosen id is taken a
new random id; the request answers with it. Two workers (or replicas) committing the same
chosen id at the same instant cannot both keep it: see `taken_ids`.

SQLite runs in WAL mode with `synchronous=NORMAL`: a commit appends to the WAL file with a
`write()` (no `fsync`), so once committed a row is in the operating system's page cache and
survives the server process dying in any way, `kill -9` included; the next open replays the WAL.
Only a crash of the whole machine (power loss, kernel panic) can lose the last commits, never
corrupt the file. `synchronous=FULL` would close that gap at the price of an fsync per group.
Postgres (or any SQLAlchemy URL) is durable on commit by its own settings.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from mlfactory.serving.log_database import (
    add_missing_indexes,
    database_reason,
    open_log_engine,
    upgrade_schema,
)
from mlfactory.serving.log_tables import decode_embedding, encode_embedding, predictions
from mlfactory.serving.taken_ids import CLAIM_ATTEMPTS, chooses_ids, give_taken_ids_new_ones

__all__ = [
    "LoggedPrediction",
    "PredictionLog",
    "PredictionLogError",
    "add_missing_indexes",
    "predictions",
    "upgrade_schema",
]

log = logging.getLogger(__name__)
# Rows in one transaction at most; a long queue is written as several quick commits.
MAX_ROWS_PER_COMMIT = 2000


class PredictionLogError(RuntimeError):
    """Rows could not be committed to the prediction log."""


@dataclass
class LoggedPrediction:
    """One row of the log: one input of one request.

    Attributes:
        request_id: the request's id (`X-Request-ID`); shared by the inputs of one request.
        input_index: the input's position in its request.
        model_name: name of the bundle that made the prediction.
        model_version: its version.
        model_run_id: the MLflow run that trained it (None in rows logged before this column,
            or for a bundle made outside `mlfactory train`).
        data_fingerprint: the fingerprint of the data it was trained on (likewise).
        input_summary: descriptive features of the input (see `Modality.summarize`).
        embedding: the model's embedding of the input (stored as float16; read back as a
            list of floats).
        probabilities: probability of every label.
        label: the predicted label.
        score: its probability.
        latency_ms: server time from the request's arrival to its predictions (reading,
            decoding, queueing, the model call; the log commit itself excluded).
        ood_score: the out-of-distribution score (None without a monitoring profile, or in
            rows logged before this column).
        in_distribution: whether that score is within the profile's threshold (likewise).
        ood_scorer: the fingerprint of the profile's scorer that gave the score (likewise).
        input_sha256: the SHA-256 of the input's bytes, the name of its file when the server
            keeps inputs (None in rows logged before this column).
        requested_id: the `X-Request-ID` the client chose (None: it sent none, or one that is
            no request id). `request_id` is the same when the rows are queued; the writer gives
            them a new one if a logged prediction has it already.
        ts: when the prediction was made (UTC).
        id: the row id, set once read back from the log.
    """

    request_id: str
    input_index: int
    model_name: str
    model_version: str
    input_summary: dict[str, Any]
    embedding: list[float] | np.ndarray
    probabilities: dict[str, float]
    label: str
    score: float
    latency_ms: float
    model_run_id: str | None = None
    data_fingerprint: str | None = None
    ood_score: float | None = None
    in_distribution: bool | None = None
    ood_scorer: str | None = None
    input_sha256: str | None = None
    requested_id: str | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: int | None = None

    def to_row(self) -> dict[str, Any]:
        """The row to insert (called by the writer thread: the conversions happen there)."""
        row = {
            column.name: getattr(self, column.name)
            for column in predictions.columns
            if column.name not in ("id", "embedding", "embedding_f16")
        }
        row["embedding"] = []
        row["embedding_f16"] = encode_embedding(self.embedding)
        return row

    @classmethod
    def from_row(cls, row: Any) -> LoggedPrediction:
        """A row read back from the log (either embedding format)."""
        values = row._asdict()
        values["embedding"] = decode_embedding(
            values.pop("embedding_f16"), values["embedding"]
        ).tolist()
        return cls(**values)


@dataclass
class _Pending:
    rows: Sequence[LoggedPrediction]
    future: Future[None]
    before_commit: Callable[[], None] | None = None
    queued_at: float = field(default_factory=time.monotonic)


class PredictionLog:
    """A SQL table of served predictions, written by one group-committing thread."""

    def __init__(self, url: str) -> None:
        """Open (and create, if needed) the log at an SQLAlchemy URL.

        Raises:
            ConfigError: the URL is invalid, its driver is not installed, or the database
                cannot be reached or written.
        """
        self.url = url
        self.engine = open_log_engine(url)
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._committing_since: float | None = None  # when the group being committed queued

    @property
    def pending(self) -> int:
        """Requests whose rows wait for a commit."""
        return self._queue.qsize()

    def lag_s(self) -> float:
        """Seconds the oldest request still waiting for its commit has waited (0 if none)."""
        oldest = self._committing_since
        if oldest is None:
            with self._queue.mutex:  # the queue's own lock: peek at its head
                head = self._queue.queue[0] if self._queue.queue else None
            oldest = head.queued_at if head is not None else None
        return 0.0 if oldest is None else time.monotonic() - oldest

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._write_forever, name="prediction-log")
        self._thread.daemon = True  # a hung database must not keep a stopping server alive
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Commit everything queued, then stop the writer and release the database."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None
        self.engine.dispose()

    def submit(
        self, rows: Sequence[LoggedPrediction], before_commit: Callable[[], None] | None = None
    ) -> Future[None]:
        """Queue rows; the future completes once they are committed (or fails).

        `before_commit` runs on the writer thread before the rows are committed; if it raises,
        the rows are not committed and the future fails with its exception. Rows whose
        `request_id` is the id their client chose (`requested_id`) get a new one if it is
        taken: read it from the rows once the future is done.
        """
        future: Future[None] = Future()
        if self._thread is None:
            future.set_exception(PredictionLogError("the prediction log is not running"))
        else:
            self._queue.put(_Pending(rows, future, before_commit))
        return future

    async def write(
        self, rows: Sequence[LoggedPrediction], before_commit: Callable[[], None] | None = None
    ) -> None:
        """Commit rows without blocking the event loop (`before_commit`: see `submit`).

        Raises:
            PredictionLogError: the rows could not be committed.
            Exception: what `before_commit` raised (the rows were not committed).
        """
        await asyncio.wrap_future(self.submit(rows, before_commit))

    def read(
        self, since_id: int = 0, since: datetime | None = None, limit: int | None = None
    ) -> list[LoggedPrediction]:
        """Logged predictions, oldest first.

        Args:
            since_id: only rows with a larger id (to read a growing log in pages).
            since: only rows logged at or after this time (UTC).
            limit: at most this many rows.
        """
        query = select(predictions).where(predictions.c.id > since_id).order_by(predictions.c.id)
        if since is not None:
            query = query.where(predictions.c.ts >= since)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [LoggedPrediction.from_row(row) for row in connection.execute(query)]

    def _write_forever(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()  # blocks: an idle log costs no CPU
            if first is None:
                return
            group, rows = [first], len(first.rows)
            while rows < MAX_ROWS_PER_COMMIT:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
                rows += len(more.rows)
            self._committing_since = first.queued_at
            try:
                self._commit(group)
            finally:
                self._committing_since = None

    def _commit(self, group: list[_Pending]) -> None:
        """Commit a group in one transaction; if that fails, each request in its own.

        One request whose rows cannot be stored (a constraint, a value the database refuses)
        must not fail the others that happened to share its group: only the requests whose own
        transaction fails get the error.
        """
        # A future whose caller went away is still written: logged-but-unanswered is harmless.
        waiting = [pending for pending in group if pending.future.set_running_or_notify_cancel()]
        failures: dict[int, Exception] = {}
        refused: dict[int, Exception] = {}  # what a request's own before-commit step raised
        for pending in group:
            try:
                if pending.before_commit is not None:
                    pending.before_commit()
            except Exception as exc:
                refused[id(pending)] = exc
        if refused:
            for pending in waiting:
                if id(pending) in refused:
                    pending.future.set_exception(refused[id(pending)])
            waiting = [pending for pending in waiting if id(pending) not in refused]
            group = [pending for pending in group if id(pending) not in refused]
            if not group:
                return
        try:
            self._insert(group)
        except Exception as exc:
            if len(group) == 1:
                failures[id(group[0])] = exc
            else:
                log.warning(
                    "a group commit of %d requests failed (%s); committing them one by one",
                    len(group),
                    database_reason(exc),
                )
                for pending in group:
                    try:
                        self._insert([pending])
                    except Exception as single:
                        failures[id(pending)] = single
        for pending in group:  # logged before anyone hears of it
            if id(pending) in failures:
                request = pending.rows[0].request_id if pending.rows else "?"
                reason = database_reason(failures[id(pending)])
                log.error("could not write request %s to the prediction log: %s", request, reason)
        for pending in waiting:
            error = failures.get(id(pending))
            if error is None:
                pending.future.set_result(None)
            else:
                message = f"the prediction log could not be written: {database_reason(error)}"
                pending.future.set_exception(PredictionLogError(message))

    def _insert(self, group: list[_Pending]) -> None:
        requests = [p.rows for p in group]
        attempts = CLAIM_ATTEMPTS if chooses_ids(requests) else 1
        for attempt in range(1, attempts + 1):
            try:
                with self.engine.begin() as connection:
                    give_taken_ids_new_ones(connection, requests)
                    rows = [row.to_row() for p in group for row in p.rows]
                    connection.execute(insert(predictions), rows)
                return
            except IntegrityError:  # another writer claimed a chosen id first: look again
                if attempt == attempts:
                    raise
