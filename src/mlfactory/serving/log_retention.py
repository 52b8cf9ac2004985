"""Retention of the prediction log: predictions older than `MLFACTORY_LOG_RETENTION` go.

A row of a 1,280-wide embedding takes about 4.2 KB, so a server answering 100 predictions a
second adds some 36 GB a day; without a limit the log only grows. With a retention period set,
each worker deletes the predictions logged longer ago than that, and the feedback labels and
chosen request ids stored longer ago, when it starts and then every `prune_interval` (a
quarter of the period, at most an hour), off the event loop. It deletes in batches of
`BATCH_ROWS`, one short transaction each, so the writer of new predictions never waits long
for the database. Several workers pruning the same log delete disjoint or already-deleted
rows: nothing breaks.

With an input store (`MLFACTORY_INPUT_STORE`), the inputs not sent within the period are
deleted in the same pass (`InputStore.prune`).

SQLite reuses the freed pages for new rows but does not shrink its file; `VACUUM` (with the
server stopped) gives the space back to the disk. PostgreSQL's autovacuum reclaims it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from mlfactory.errors import first_line
from mlfactory.serving.input_store import InputStore
from mlfactory.serving.log_tables import chosen_request_ids, feedback, predictions
from mlfactory.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)
BATCH_ROWS = 10_000
MAX_INTERVAL = timedelta(hours=1)


def prune_log(engine: Engine, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete the predictions logged, and the feedback labels stored, before `now - older_than`.

    Args:
        engine: the prediction log.
        older_than: the retention period.
        now: the time to count back from (default: now, UTC).

    Returns:
        How many predictions were deleted.
    """
    cutoff = (now or datetime.now(UTC)) - older_than
    deleted = 0
    while True:
        oldest = (
            select(predictions.c.id)
            .where(predictions.c.ts < cutoff)
            .order_by(predictions.c.ts)  # walks the index on ts: no sort of every old row
            .limit(BATCH_ROWS)
        )
        with engine.begin() as connection:
            ids = list(connection.execute(oldest).scalars())
            if ids:
                connection.execute(delete(predictions).where(predictions.c.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < BATCH_ROWS:
            break
    with engine.begin() as connection:
        connection.execute(delete(feedback).where(feedback.c.ts < cutoff))
        connection.execute(delete(chosen_request_ids).where(chosen_request_ids.c.ts < cutoff))
    return deleted


def prune_interval(older_than: timedelta) -> timedelta:
    """How often a worker prunes: a quarter of the retention period, at most an hour."""
    return min(older_than / 4, MAX_INTERVAL)


class LogRetention:
    """Prunes one worker's prediction log on a schedule."""

    def __init__(
        self,
        engine: Engine,
        older_than: timedelta,
        metrics: ServingMetrics,
        store: InputStore | None = None,
    ) -> None:
        self.engine, self.period, self.metrics = engine, older_than, metrics
        self.store = store  # its inputs not sent within the period go too
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Prune now, then every `prune_interval`, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-retention")

    async def stop(self) -> None:
        """Cancel the task (a batch in its thread finishes on its own)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def prune_now(self) -> int:
        """One pass; 0 (and a warning) when the log cannot be pruned now."""
        try:
            deleted = await run_in_threadpool(prune_log, self.engine, self.period)
        except SQLAlchemyError as exc:
            log.warning("prediction log not pruned (retried later): %s", first_line(exc))
            return 0
        if deleted:
            self.metrics.log_pruned.inc(deleted)
            log.info("prediction log: deleted %d predictions older than %s", deleted, self.period)
        if self.store is not None:
            try:
                gone = await run_in_threadpool(self.store.prune, self.period)
            except OSError as exc:
                log.warning("input store not pruned (retried later): %s", exc)
            else:
                if gone:
                    log.info("input store: deleted %d inputs not sent for %s", gone, self.period)
        return deleted

    async def _run(self) -> None:
        while True:
            await self.prune_now()
            await asyncio.sleep(prune_interval(self.period).total_seconds())
