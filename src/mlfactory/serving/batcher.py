"""Adaptive batching: inputs that queue up while the model is busy run as one ONNX Runtime call.

One model-runner thread makes every model call, one at a time: on a small CPU machine a single
call already uses every core, so two concurrent calls would only fight over them. Requests hand
over inputs that are already encoded (decoding and preprocessing run in the request threadpool)
and await a future. The runner takes whatever has queued, up to `max_batch_size` inputs, as soon
as the model is free. A lone request on an idle server therefore runs at once; batches form only
under load ("continuous" batching). `max_wait_ms > 0` additionally holds a batch open that long
for more inputs, trading latency for larger batches.

Each job remembers the predictor whose encoder produced its inputs, and runs on that predictor:
after a hot reload the jobs already encoded for the old model finish on it, and a batch never
mixes two models. Nothing here polls: the runner sleeps on an event while the queue is empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mlfactory.predictor import BatchOutput, Predictor

log = logging.getLogger(__name__)
BatchObserver = Callable[[int, float], None]


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class _Job:
    predictor: Predictor
    inputs: list[dict[str, np.ndarray]]
    future: asyncio.Future[BatchOutput]


class Batcher:
    """Runs encoded inputs of many concurrent requests through the model in shared batches."""

    def __init__(
        self,
        max_batch_size: int,
        max_wait_ms: float = 0.0,
        on_batch: BatchObserver | None = None,
    ) -> None:
        """Set up an idle batcher; `start` it from the event loop that will submit jobs.

        Args:
            max_batch_size: most inputs per model call; a larger request runs alone, whole.
            max_wait_ms: how long a batch may wait for more inputs once the model is free.
            on_batch: called after each model call with its input count and duration (s).
        """
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._jobs: deque[_Job] = deque()
        self._queued_inputs = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queue_depth(self) -> int:
        """Inputs waiting for the model (not counting the batch being run)."""
        return self._queued_inputs

    def start(self) -> None:
        """Start the runner on the running event loop."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlfactory-model")
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="batcher")

    async def stop(self) -> None:
        """Stop the runner: the batch in progress finishes, queued jobs fail with BatcherStopped."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(BatcherStopped("the server is shutting down"))
        self._queued_inputs = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def run(self, predictor: Predictor, inputs: list[dict[str, np.ndarray]]) -> BatchOutput:
        """The model outputs for `inputs` (encoded by `predictor`), in order.

        Raises:
            BatcherStopped: the batcher is not running.
            Exception: whatever the model call raised for this job.
        """
        if self._task is None or self._task.done() or self._stopping:
            raise BatcherStopped("the model runner is not running")
        future: asyncio.Future[BatchOutput] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(predictor, inputs, future))
        self._queued_inputs += len(inputs)
        self._wakeup.set()
        return await future

    async def _serve(self) -> None:
        while not self._stopping:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_wait_s > 0:
                await self._gather()
            batch = self._take()
            try:
                await self._execute(batch)
            except Exception as exc:  # a bug here must not leave callers waiting forever
                log.exception("the model runner failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    async def _gather(self) -> None:
        """Wait up to `max_wait_s` for the queue to fill a batch."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while self._queued_inputs < self.max_batch_size and not self._stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """The next batch: queued jobs of the first job's predictor, up to `max_batch_size`."""
        first = self._jobs.popleft()
        batch, size = [first], len(first.inputs)
        while self._jobs:
            job = self._jobs[0]
            if job.predictor is not first.predictor or size + len(job.inputs) > self.max_batch_size:
                break
            batch.append(self._jobs.popleft())
            size += len(job.inputs)
        self._queued_inputs -= size
        return [job for job in batch if not job.future.done()]  # done: the caller went away

    async def _execute(self, batch: list[_Job]) -> None:
        if not batch:
            return
        assert self._executor is not None
        inputs = [item for job in batch for item in job.inputs]
        predictor = batch[0].predictor
        started = time.perf_counter()
        try:
            output = await asyncio.get_running_loop().run_in_executor(
                self._executor, predictor.run, inputs
            )
        except Exception as exc:
            if len(batch) > 1:  # one job's failure must not fail the jobs batched with it
                log.warning("a batch of %d jobs failed; running them one by one", len(batch))
                for job in batch:
                    await self._execute([job])
            elif not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(inputs), time.perf_counter() - started)
        start = 0
        for job in batch:
            end = start + len(job.inputs)
            if not job.future.done():
                job.future.set_result(output.rows(start, end))
            start = end
