"""The batcher: concurrent jobs share model calls, each caller gets its own rows, nothing waits.

A recording stand-in for `Predictor.run` shows which inputs went into which model call; a gate
holds the first call so that later jobs queue up behind it, as they do under load.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from mlfactory.predictor import BatchOutput, Predictor
from mlfactory.serving.batcher import Batcher, BatcherStopped

TIMEOUT_S = 10.0


class RecordingModel:
    """Each input is {"x": [value]}; the output row echoes the value and the model's tag."""

    def __init__(self, tag: float = 0.0, gate: threading.Event | None = None) -> None:
        self.tag = tag
        self.gate = gate
        self.calls: list[list[float]] = []
        self.fail_on: float | None = None
        self.started = threading.Event()

    def run(self, encoded: list[dict[str, np.ndarray]]) -> BatchOutput:
        values = [float(item["x"][0]) for item in encoded]
        self.calls.append(values)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT_S)
        if self.fail_on is not None and self.fail_on in values:
            raise RuntimeError(f"cannot run {self.fail_on}")
        probabilities = np.array([[value, self.tag] for value in values], dtype=np.float32)
        return BatchOutput(probabilities, probabilities * 10)


def items(*values: float) -> list[dict[str, np.ndarray]]:
    return [{"x": np.array([value], dtype=np.float32)} for value in values]


def as_predictor(model: RecordingModel) -> Predictor:
    return model  # type: ignore[return-value]  # the batcher only calls `run`


def run_with_batcher(
    test: Callable[[Batcher], Awaitable[Any]], max_batch_size: int = 8, max_wait_ms: float = 0.0
) -> Any:
    observed: list[tuple[int, float]] = []

    async def main() -> Any:
        batcher = Batcher(max_batch_size, max_wait_ms, lambda n, s: observed.append((n, s)))
        batcher.start()
        try:
            return await asyncio.wait_for(test(batcher), TIMEOUT_S), observed
        finally:
            await batcher.stop()

    return asyncio.run(main())


async def queued_behind_gate(
    batcher: Batcher, model: RecordingModel, gate: threading.Event, jobs: list[list[float]]
) -> list[BatchOutput]:
    """Start one job that holds the model, queue `jobs` behind it, then open the gate."""
    predictor = as_predictor(model)
    first = asyncio.ensure_future(batcher.run(predictor, items(-1.0)))
    while not model.started.is_set():
        await asyncio.sleep(0.001)
    rest = [asyncio.ensure_future(batcher.run(predictor, items(*job))) for job in jobs]
    await asyncio.sleep(0)
    assert batcher.queue_depth == sum(len(job) for job in jobs)
    gate.set()
    outputs = await asyncio.gather(first, *rest)
    return list(outputs[1:])


def test_a_lone_job_runs_at_once_and_gets_its_rows() -> None:
    model = RecordingModel()

    async def test(batcher: Batcher) -> BatchOutput:
        return await batcher.run(as_predictor(model), items(1.0, 2.0))

    output, observed = run_with_batcher(test)
    assert model.calls == [[1.0, 2.0]]
    assert output.probabilities[:, 0].tolist() == [1.0, 2.0]
    assert output.embeddings.shape == (2, 2)
    assert [size for size, _ in observed] == [2]


def test_jobs_queued_while_the_model_is_busy_share_one_call() -> None:
    gate = threading.Event()
    model = RecordingModel(gate=gate)

    async def test(batcher: Batcher) -> list[BatchOutput]:
        return await queued_behind_gate(batcher, model, gate, [[1.0], [2.0, 3.0], [4.0]])

    outputs, observed = run_with_batcher(test)
    assert model.calls == [[-1.0], [1.0, 2.0, 3.0, 4.0]]
    assert [o.probabilities[:, 0].tolist() for o in outputs] == [[1.0], [2.0, 3.0], [4.0]]
    assert [size for size, _ in observed] == [1, 4]


def test_batches_stop_at_max_batch_size_without_splitting_a_job() -> None:
    gate = threading.Event()
    model = RecordingModel(gate=gate)

    async def test(batcher: Batcher) -> list[BatchOutput]:
        jobs = [[1.0, 2.0], [3.0, 4.0], [5.0], [6.0, 7.0, 8.0, 9.0, 10.0]]
        return await queued_behind_gate(batcher, model, gate, jobs)

    outputs, _ = run_with_batcher(test, max_batch_size=4)
    # The oversized job runs alone, whole: one request is never split.
    assert model.calls == [[-1.0], [1.0, 2.0, 3.0, 4.0], [5.0], [6.0, 7.0, 8.0, 9.0, 10.0]]
    assert outputs[3].probabilities[:, 0].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0]


def test_jobs_of_two_models_are_never_mixed() -> None:
    gate = threading.Event()
    old, new = RecordingModel(tag=1.0, gate=gate), RecordingModel(tag=2.0)

    async def test(batcher: Batcher) -> list[BatchOutput]:
        first = asyncio.ensure_future(batcher.run(as_predictor(old), items(0.0)))
        while not old.started.is_set():
            await asyncio.sleep(0.001)
        jobs = [(old, 1.0), (new, 2.0), (new, 3.0), (old, 4.0)]
        rest = [batcher.run(as_predictor(model), items(value)) for model, value in jobs]
        pending = [asyncio.ensure_future(job) for job in rest]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(first, *pending))

    outputs, _ = run_with_batcher(test)
    assert old.calls == [[0.0], [1.0], [4.0]]
    assert new.calls == [[2.0, 3.0]]
    assert [o.probabilities[0, 1] for o in outputs] == [1.0, 1.0, 2.0, 2.0, 1.0]


def test_max_wait_gathers_jobs_that_arrive_shortly_after() -> None:
    model = RecordingModel()

    async def test(batcher: Batcher) -> None:
        first = asyncio.ensure_future(batcher.run(as_predictor(model), items(1.0)))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.run(as_predictor(model), items(2.0)))
        await asyncio.gather(first, second)

    run_with_batcher(test, max_wait_ms=10_000.0, max_batch_size=2)
    assert model.calls == [[1.0, 2.0]]  # a full batch runs without waiting out the window


def test_a_failing_job_fails_alone() -> None:
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    model.fail_on = 2.0

    async def test(batcher: Batcher) -> list[Any]:
        first = asyncio.ensure_future(batcher.run(as_predictor(model), items(-1.0)))
        while not model.started.is_set():
            await asyncio.sleep(0.001)
        jobs = [
            asyncio.ensure_future(batcher.run(as_predictor(model), items(v))) for v in (1, 2, 3)
        ]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(first, *jobs, return_exceptions=True))

    results, _ = run_with_batcher(test)
    assert model.calls == [[-1.0], [1.0, 2.0, 3.0], [1.0], [2.0], [3.0]]
    assert isinstance(results[2], RuntimeError)
    assert results[1].probabilities[0, 0] == 1.0
    assert results[3].probabilities[0, 0] == 3.0


def test_a_job_whose_caller_left_is_skipped() -> None:
    gate = threading.Event()
    model = RecordingModel(gate=gate)

    async def test(batcher: Batcher) -> None:
        first = asyncio.ensure_future(batcher.run(as_predictor(model), items(-1.0)))
        while not model.started.is_set():
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(batcher.run(as_predictor(model), items(1.0)))
        kept = asyncio.ensure_future(batcher.run(as_predictor(model), items(2.0)))
        await asyncio.sleep(0)
        gone.cancel()
        gate.set()
        await asyncio.gather(first, kept)

    run_with_batcher(test)
    assert model.calls == [[-1.0], [2.0]]


def test_a_stopped_batcher_refuses_and_fails_queued_jobs() -> None:
    gate = threading.Event()
    model = RecordingModel(gate=gate)

    async def main() -> tuple[Any, Any]:
        batcher = Batcher(8)
        with pytest.raises(BatcherStopped):
            await batcher.run(as_predictor(model), items(0.0))
        batcher.start()
        first = asyncio.ensure_future(batcher.run(as_predictor(model), items(1.0)))
        while not model.started.is_set():
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(batcher.run(as_predictor(model), items(2.0)))
        await asyncio.sleep(0)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.01)
        gate.set()
        await stopping
        return await asyncio.gather(first, queued, return_exceptions=True)

    done, refused = asyncio.run(main())
    assert done.probabilities[0, 0] == 1.0  # the batch in progress finished
    assert isinstance(refused, BatcherStopped)
