"""Time and memory of reading the largest window the server allows (100,000 predictions).

Writes `--rows` predictions of one model (1,280-wide float16 embeddings, as `digits` logs them)
to a SQLite log through `PredictionLog`, then reads them all with `read_window` and prints the
time it took, the window's embedding array and how much the process's peak resident memory
grew while reading.

    python -m benchmarks.monitoring.window_memory
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.monitoring.shared_log import write

from mlfactory.monitoring.log_window import MAX_WINDOW_ROWS, read_window
from mlfactory.serving.prediction_log import PredictionLog


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=MAX_WINDOW_ROWS)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="window-memory-"))
    try:
        url = f"sqlite:///{folder / 'predictions.db'}"
        log = PredictionLog(url)
        log.start()
        write(log, "quiet", args.rows, np.random.default_rng(0))
        log.close()
        log.engine.dispose()
        before = peak_mib()
        start = time.perf_counter()
        window = read_window(url, "quiet", "1", last=args.rows)
        elapsed = time.perf_counter() - start
        grown = peak_mib() - before
        print(
            f"{len(window):,} predictions read in {elapsed:.1f} s; embeddings "
            f"{window.embeddings.nbytes / 2**20:.0f} MiB; peak memory grew by {grown:.0f} MiB"
        )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
