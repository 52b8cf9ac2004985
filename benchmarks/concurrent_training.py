"""Two trainings at once on one machine's CPUs, with each its default threads, its share of
the cores, or OpenMP threads that sleep while they wait: what several sweep workers (or test
workers) on one machine meet.

    python -m benchmarks.concurrent_training
    python -m benchmarks.concurrent_training --repeats 3 --out runs/bench/concurrent

Each training is a real `mlfactory train digits` process (small: 40 digits a class at 32 px,
3 epochs), timed from start to exit (imports, data, fit, export). Five cases, one after the
other on the same machine, the whole round `--repeats` times (one round's figures move by a
fifth from one round to the next):

- `alone`: one training, torch's default threads (one per core);
- `alone, passive wait`: the same with `OMP_WAIT_POLICY=PASSIVE`: an OpenMP thread that waits
  for the others sleeps at once instead of spinning a while first (GNU OpenMP, which torch's
  Linux wheels use, spins up to `GOMP_SPINCOUNT`, 300,000 times, by default);
- `two at once, default threads`: two started together, each with the default;
- `two at once, passive wait`: two started together, each with `OMP_WAIT_POLICY=PASSIVE`;
- `two at once, N thread(s) each`: two started together, each with its share of the cores,
  `OMP_NUM_THREADS` = N = cores / 2.

It prints each case's mean seconds per training (and the fastest and slowest round) and the
mean's ratio to `alone`'s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


# The OpenMP settings this benchmark varies: a case's own, and the caller's of none of them.
OPENMP_SETTINGS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def start(work: Path, name: str, settings: dict[str, str]) -> subprocess.Popen[bytes]:
    folder = work / name
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_SETTINGS}
    env.update(settings)
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


def run_together(work: Path, case: str, count: int, settings: dict[str, str]) -> float:
    """Start `count` trainings at once; the mean seconds each took to exit."""
    started = time.perf_counter()
    processes = [start(work, f"{case}-{i}", settings) for i in range(count)]
    seconds = []
    for process in processes:
        _, stderr = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise SystemExit(f"error: a training failed: {stderr.decode()[-2000:]}")
        seconds.append(time.perf_counter() - started)
    return statistics.mean(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the five cases")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="mlfactory-concurrent-"))
    cores = len(os.sched_getaffinity(0))
    share = max(1, cores // 2)
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    cases: list[tuple[str, int, dict[str, str]]] = [
        ("alone", 1, {}),
        ("alone, passive wait", 1, passive),
        ("two at once, default threads", 2, {}),
        ("two at once, passive wait", 2, passive),
        (f"two at once, {share} thread(s) each", 2, {"OMP_NUM_THREADS": str(share)}),
    ]
    print(f"{cores} cores; `mlfactory train digits {' '.join(OVERRIDES)}`")
    run_together(work, "warm-up", 1, {})  # the data prepared once into the OS's file cache
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for round_ in range(args.repeats):
        for number, (name, count, settings) in enumerate(cases):
            seconds[name].append(run_together(work, f"{round_}-{number}", count, settings))
    alone = statistics.mean(seconds["alone"])
    print(f"{'case':<34} {'s per training':>15} {'fastest':>8} {'slowest':>8} {'x alone':>8}")
    for name, measured in seconds.items():
        mean = statistics.mean(measured)
        print(
            f"{name:<34} {mean:>15.1f} {min(measured):>8.1f} {max(measured):>8.1f}"
            f" {mean / alone:>8.2f}"
        )
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
