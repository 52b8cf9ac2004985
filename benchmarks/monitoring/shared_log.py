"""Reading one model's window from a SQLite log shared with a busier model, with and without
the log's (model_name, model_version, id) index, side by side in one run.

Writes `--quiet` rows of model `quiet` and then `--busy` rows of model `busy` through
`PredictionLog` (1,280-wide float16 embeddings, as `digits` logs them), then reads the quiet
model's latest `--last` predictions with `read_window` (what `mlfactory monitor` and the
server's checks do): first without the index (dropped, as in a log of an older mlfactory), then
with it (added back as a server's start adds it), and prints the time of each and their ratio.
With `--cold` (root only) the page cache is dropped before each read, so the reads come from
the disk, as the first `mlfactory monitor` of the day does. `--writes N` also times writing N
rows to a new log with the index and without it, alternately, three times each (what the index
costs the server's writes).

    python -m benchmarks.monitoring.shared_log --busy 500000 --cold
    python -m benchmarks.monitoring.shared_log --busy 0 --writes 60000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from mlfactory.monitoring.log_window import read_window
from mlfactory.serving.log_tables import predictions
from mlfactory.serving.prediction_log import LoggedPrediction, PredictionLog, add_missing_indexes

INDEX = "ix_predictions_model_version_id"
LABELS = [str(digit) for digit in range(10)]
BATCH = 20_000


def write(log: PredictionLog, model: str, rows: int, rng: np.random.Generator) -> None:
    embedding = np.maximum(rng.normal(0.0, 1.0, 1280), 0.0).astype(np.float32)
    probabilities = dict(zip(LABELS, rng.dirichlet(np.ones(len(LABELS))).tolist(), strict=True))
    for start in range(0, rows, BATCH):
        batch = [
            LoggedPrediction(
                request_id=f"{model}-{i}",
                input_index=0,
                model_name=model,
                model_version="1",
                input_summary={"bytes": 700, "brightness_mean": 0.13},
                embedding=embedding,
                probabilities=probabilities,
                label="3",
                score=max(probabilities.values()),
                latency_ms=5.0,
                ood_score=1.0,
                in_distribution=True,
            )
            for i in range(start, min(start + BATCH, rows))
        ]
        log.submit(batch).result()


def write_seconds(rows: int, indexed: bool) -> float:
    """Seconds to write `rows` rows to a new log (after 2,000 to warm it up)."""
    folder = Path(tempfile.mkdtemp(prefix="log-writes-"))
    log = PredictionLog(f"sqlite:///{folder / 'predictions.db'}")
    if not indexed:
        with log.engine.begin() as connection:
            connection.execute(text(f"DROP INDEX {INDEX}"))
    log.start()
    rng = np.random.default_rng(0)
    write(log, "warm", 2000, rng)
    start = time.perf_counter()
    write(log, "quiet", rows, rng)
    elapsed = time.perf_counter() - start
    log.close()
    log.engine.dispose()
    shutil.rmtree(folder)
    return elapsed


def timed_read(url: str, last: int, cold: bool) -> float:
    if cold:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    start = time.perf_counter()
    window = read_window(url, "quiet", "1", last=last)
    elapsed = time.perf_counter() - start
    assert len(window) == last, len(window)
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", type=int, default=10_000, help="rows of the model read")
    parser.add_argument("--busy", type=int, default=200_000, help="newer rows of another model")
    parser.add_argument("--last", type=int, default=1000, help="the window read")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before reads")
    parser.add_argument("--writes", type=int, default=0, help="also time writing this many")
    args = parser.parse_args(argv)
    if args.writes:
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(3):
            for indexed in (False, True):
                times[indexed].append(write_seconds(args.writes, indexed))
        with_index, without = (float(np.median(times[flag])) for flag in (True, False))
        print(
            f"writing {args.writes:,} rows (median of 3): with the index {with_index:.2f} s, "
            f"without {without:.2f} s: x{with_index / without:.2f}"
        )
        if not args.busy:
            return
    if args.cold and os.geteuid() != 0:
        raise SystemExit("error: --cold drops the page cache, which needs root")
    folder = Path(tempfile.mkdtemp(prefix="shared-log-"))
    url = f"sqlite:///{folder / 'predictions.db'}"
    log = PredictionLog(url)
    log.start()
    rng = np.random.default_rng(0)
    write(log, "quiet", args.quiet, rng)
    write(log, "busy", args.busy, rng)
    log.close()
    with log.engine.begin() as connection:
        connection.execute(text(f"DROP INDEX {INDEX}"))
    size = (folder / "predictions.db").stat().st_size
    print(f"log: {args.quiet:,} rows of quiet, then {args.busy:,} of busy; {size / 2**30:.2f} GiB")
    without = timed_read(url, args.last, args.cold)
    start = time.perf_counter()
    assert add_missing_indexes(log.engine, predictions) == [INDEX]
    built = time.perf_counter() - start
    log.engine.dispose()
    indexed = timed_read(url, args.last, args.cold)
    cache = "cold page cache" if args.cold else "warm page cache"
    print(
        f"quiet --last {args.last:,} ({cache}): without the index {without:.2f} s, with it "
        f"{indexed:.3f} s: x{without / indexed:.0f}; building the index took {built:.1f} s"
    )
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
