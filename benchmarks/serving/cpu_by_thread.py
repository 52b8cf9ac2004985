"""Where the mlfactory API's CPU goes: CPU milliseconds per request, by server thread.

Runs the API in this process (uvicorn in a background thread, on a free 127.0.0.1 port, the
same app `mlfactory serve` builds) and drives it from a separate load-generator process. Python
threads are named by `threading`; threads Python does not know are ONNX Runtime's intra-op pool.
Per-thread CPU comes from the kernel (psutil), so the figures include native code.

    .venv/bin/python -m benchmarks.serving.cpu_by_thread --bundle runs/bench/resnet18/bundle \
        --images runs/bench/images --concurrency 1,16 --duration 15
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import uvicorn
from benchmarks.serving.processes import HOST, PYTHON, free_port

from mlfactory.serving.app import create_app

# Numbered pools become one group: "AnyIO worker thread", "mlfactory-model_0" -> "mlfactory-model".
_NUMBERED = re.compile(r"[_-]\d+$")
GROUPS = {
    "uvicorn-runner": "event loop (HTTP, multipart, routing, JSON, metrics)",
    "MainThread": "this script (waits for the load generator)",
    "AnyIO worker thread": "request threadpool (JPEG decode + preprocess)",
    "mlfactory-model": "model runner (ONNX Runtime, calling thread)",
    "ONNX Runtime pool": "ONNX Runtime intra-op pool",
    "prediction-log": "prediction log writer (SQLite commit)",
}


def thread_groups() -> dict[int, str]:
    """Native thread id -> group name, for the Python threads alive now."""
    return {
        thread.native_id: _NUMBERED.sub("", thread.name)
        for thread in threading.enumerate()
        if thread.native_id is not None
    }


def cpu_by_group() -> dict[str, float]:
    """CPU seconds so far of this process's threads, summed per group."""
    names = thread_groups()
    totals: dict[str, float] = {}
    for thread in psutil.Process().threads():
        group = names.get(thread.id, "ONNX Runtime pool")
        totals[group] = totals.get(group, 0.0) + thread.user_time + thread.system_time
    return totals


def drive(
    url: str, images: Path, concurrency: int, duration: float, unique: bool = False
) -> dict[str, Any]:
    """One load run from a separate process (benchmarks.serving.load)."""
    import subprocess

    command = [PYTHON, "-m", "benchmarks.serving.load", "--url", url, "--images", str(images)]
    command += ["--concurrency", str(concurrency), "--duration", str(duration)]
    command += ["--max-requests", "100000", *(["--unique"] if unique else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(
    bundle: Path, images: Path, levels: list[int], duration: float, unique: bool = False
) -> dict[str, Any]:
    """Start the API, warm it up, then for each level: req/s and CPU ms per request by group."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(bundle), host=HOST, port=port, log_level="warning")
    )
    runner = threading.Thread(target=server.run, name="uvicorn-runner", daemon=True)
    runner.start()
    while not server.started:
        time.sleep(0.1)
    url = f"http://{HOST}:{port}/v1/predict"
    result: dict[str, Any] = {"bundle": str(bundle), "levels": {}}
    try:
        drive(url, images, max(levels), 5.0, unique)  # warm-up: allocations for every batch shape
        for level in levels:
            before, started = cpu_by_group(), time.perf_counter()
            run = drive(url, images, level, duration, unique)
            wall, after = time.perf_counter() - started, cpu_by_group()
            per_request = {
                GROUPS.get(group, group): round(
                    1000 * (seconds - before.get(group, 0.0)) / run["ok"], 2
                )
                for group, seconds in after.items()
                if seconds - before.get(group, 0.0) > 0.001
            }
            result["levels"][str(level)] = {
                "throughput_rps": run["throughput_rps"],
                "p50_ms": run["p50_ms"],
                "cores": round((sum(after.values()) - sum(before.values())) / wall, 3),
                "cpu_ms_per_request": dict(sorted(per_request.items(), key=lambda kv: -kv[1])),
            }
    finally:
        server.should_exit = True
        runner.join(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--concurrency", default="1,16", help="levels, comma-separated")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    parser.add_argument(
        "--unique", action="store_true", help="new bytes every request (benchmarks/serving/load.py)"
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFACTORY_LOG_URL", f"sqlite:///{args.bundle.parent}/cpu-by-thread.db")
    levels = sorted({int(level) for level in args.concurrency.split(",")})
    result = measure(args.bundle, args.images, levels, args.duration, args.unique)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
