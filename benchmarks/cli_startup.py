"""How long `mlfactory train` takes to refuse a wrong recipe or data it cannot train on: the
budget is 1.5 s.

Each case runs the installed CLI as a new process, as a user would, several times, and prints
the median wall time, the median CPU time (user + system: what the process itself needs, which
other load on the machine does not inflate) and the load average while it ran. `python -c pass`
is the floor every process pays. Nothing here is asserted: the figures go to
docs/benchmarks.md with the command that made them.

    python benchmarks/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mlfactory.data.packaged import mnist_csv

BUDGET_S = 1.5
CASES = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "train digits trainer.max_epoch=3 (typo)": ["train", "digits", "trainer.max_epoch=3"],
    "train digits trainer.lr=fast (type)": ["train", "digits", "trainer.lr=fast"],
    "train image (no data.source)": ["train", "image"],
    "data digits data.source=~/... (no such folder)": [
        "data",
        "digits",
        "data.source=~/no such folder (v2)",
        "data.cache_dir=/tmp/mlfactory-bench-cache",
    ],
}


def one_class_folder(root: Path) -> Path:
    """Twenty real MNIST sevens in root/digits/7: a source that trains no classifier."""
    with gzip.open(mnist_csv(), "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.uint8, max_rows=500)
    folder = root / "digits" / "7"
    folder.mkdir(parents=True)
    for index, row in enumerate(row for row in rows if row[-1] == 7):
        if index == 20:
            break
        Image.fromarray(row[:-1].reshape(28, 28), mode="L").save(folder / f"{index}.png")
    return folder.parent


def mlfactory_command() -> list[str]:
    """The installed `mlfactory` script next to this Python, else `python -m mlfactory.cli`."""
    script = shutil.which("mlfactory", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "mlfactory.cli"]


def measure(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit code of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    base = mlfactory_command()
    work = Path(tempfile.mkdtemp(prefix="mlfactory-bench-"))
    CASES["train digits on one class (data error)"] = [
        "train",
        "digits",
        f"data.source={one_class_folder(work)}",
        f"data.cache_dir={work / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
        "--out",
        str(work / "run"),
    ]
    print(f"{'case':<48} {'wall s':>7} {'cpu s':>7} {'exit':>5}  load (1 min)")
    for name, args in CASES.items():
        command = args if args[0] == sys.executable else [*base, *args]
        measure(command)  # warm the file cache
        walls, cpus, codes = [], [], set()
        for _ in range(runs):
            wall, cpu, code = measure(command)
            walls.append(wall)
            cpus.append(cpu)
            codes.add(code)
        load = os.getloadavg()[0]
        print(
            f"{name:<48} {statistics.median(walls):7.2f} {statistics.median(cpus):7.2f} "
            f"{','.join(map(str, sorted(codes))):>5}  {load:.1f}"
        )
    print(f"budget: {BUDGET_S} s wall on an idle machine; medians of {runs} runs")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
