"""The limit: the bundle on bare ONNX Runtime in one process, no HTTP.

Measures, with mlfactory's own `Predictor` (the session options the server uses):

- single-image latency, model only (one pre-encoded image per `session.run`) and end to end
  (`Predictor.predict` on one JPEG: decode, preprocess, run), median over many calls;
- batched model throughput for several batch sizes on pre-encoded images; the best of them is
  the "bare ORT" figure (a) the server is compared with;
- a sequential decode + preprocess + run loop in batches of 16 (what one process gets without
  overlapping decoding with the model).

    .venv/bin/python -m benchmarks.serving.inprocess --bundle runs/bench/resnet18/bundle \
        --images runs/bench/images --seconds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.serving.processes import machine_busy_seconds

from mlfactory.predictor import Predictor

BATCH_SIZES = (1, 8, 16, 32)
PIPELINE_BATCH = 16


def _repeat(call: Callable[[int], int], seconds: float) -> tuple[list[float], int]:
    """Call `call(i)` (returns images done) until `seconds` pass; durations and image count."""
    durations: list[float] = []
    images = index = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or not durations:
        started = time.perf_counter()
        images += call(index)
        durations.append(time.perf_counter() - started)
        index += 1
    return durations, images


def measure(bundle: Path, images: list[bytes], seconds: float) -> dict[str, Any]:
    """All in-process figures for one bundle (see the module docstring)."""
    predictor = Predictor.from_path(bundle)
    predictor.check()
    encoded = [predictor.encode(raw) for raw in images]

    def batch_of(size: int, index: int) -> list[Any]:
        return [encoded[(index * size + k) % len(encoded)] for k in range(size)]

    result: dict[str, Any] = {"bundle": str(bundle), "seconds_per_figure": seconds}
    _repeat(lambda i: len(predictor.run(batch_of(1, i)).probabilities), 1.0)  # warm-up
    durations, _ = _repeat(lambda i: len(predictor.run(batch_of(1, i)).probabilities), seconds)
    result["single_model_ms"] = round(1000 * statistics.median(durations), 2)
    durations, _ = _repeat(lambda i: len(predictor.predict([images[i % len(images)]])), seconds)
    result["single_end_to_end_ms"] = round(1000 * statistics.median(durations), 2)
    batched = {}
    for size in BATCH_SIZES:
        predictor.run(batch_of(size, 0))  # first call at a new shape allocates

        def run_batch(index: int, size: int = size) -> int:
            return len(predictor.run(batch_of(size, index)).probabilities)

        durations, done = _repeat(run_batch, seconds)
        batched[str(size)] = round(done / sum(durations), 2)
    result["batched_img_per_s"] = batched
    best = max(batched, key=lambda size: batched[size])
    result["limit_img_per_s"], result["limit_batch_size"] = batched[best], int(best)

    def pipeline(index: int) -> int:
        raws = [images[(index * PIPELINE_BATCH + k) % len(images)] for k in range(PIPELINE_BATCH)]
        return len(predictor.predict(raws))

    durations, done = _repeat(pipeline, seconds)
    result["pipeline_img_per_s"] = round(done / sum(durations), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="bare ONNX Runtime figures for a bundle")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0, help="per figure")
    args = parser.parse_args()
    raws = [path.read_bytes() for path in sorted(args.images.glob("*.jpg"))]
    busy, own, started = machine_busy_seconds(), time.process_time(), time.perf_counter()
    result = measure(args.bundle, raws, args.seconds)
    wall = time.perf_counter() - started
    result["own_cpu_cores"] = round((time.process_time() - own) / wall, 3)
    # Everything else on the machine meanwhile: should be near 0 for a clean measurement.
    other = (machine_busy_seconds() - busy) / wall - result["own_cpu_cores"]
    result["other_cpu_cores"] = round(other, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
