"""Two trainings at once on one machine's CPUs, with each its default threads or its share of
the cores: what several sweep workers (or test workers) on one machine meet.

    python -m benchmarks.concurrent_training
    python -m benchmarks.concurrent_training --out runs/bench/concurrent

Each training is a real `mlfactory train digits` process (small: 40 digits a class at 32 px,
3 epochs), timed from start to exit (imports, data, fit, export). Three cases, one after the
other on the same machine:

- `alone`: one training, torch's default threads (one per core);
- `two at once, default threads`: two started together, each with the default;
- `two at once, share of the cores`: two started together, each with
  `OMP_NUM_THREADS` = cores / 2.

It prints each case's seconds per training and their ratio to `alone`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.cli_startup import mlfactory_command

OVERRIDES = [
    "data.max_per_class=40",
    "preprocess.resize_size=32",
    "preprocess.crop_size=32",
    "trainer.batch_size=8",
    "trainer.max_epochs=3",
]


def start(work: Path, name: str, threads: int | None) -> subprocess.Popen[bytes]:
    folder = work / name
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [
        *mlfactory_command(),
        "train",
        "digits",
        *OVERRIDES,
        f"data.cache_dir={folder / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{folder / 'mlruns.db'}",
        f"tracking.artifact_location={folder / 'artifacts'}",
        "--out",
        str(folder / "run"),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_together(work: Path, case: str, count: int, threads: int | None) -> float:
    """Start `count` trainings at once; the mean seconds each took to exit."""
    started = time.perf_counter()
    processes = [start(work, f"{case}-{i}", threads) for i in range(count)]
    seconds = []
    for process in processes:
        _, stderr = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise SystemExit(f"error: a training failed: {stderr.decode()[-2000:]}")
        seconds.append(time.perf_counter() - started)
    return sum(seconds) / len(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="mlfactory-concurrent-"))
    cores = len(os.sched_getaffinity(0))
    share = max(1, cores // 2)
    print(f"{cores} cores; `mlfactory train digits {' '.join(OVERRIDES)}`")
    run_together(work, "warm-up", 1, None)  # the data prepared once into the OS's file cache
    alone = run_together(work, "alone", 1, None)
    cases = [
        ("alone", alone),
        ("two at once, default threads", run_together(work, "default", 2, None)),
        (f"two at once, {share} thread(s) each", run_together(work, "share", 2, share)),
    ]
    print(f"{'case':<34} {'s per training':>15} {'x alone':>8}")
    for name, seconds in cases:
        print(f"{name:<34} {seconds:>15.1f} {seconds / alone:>8.2f}")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
