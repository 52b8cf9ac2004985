"""The verdict at a strict level: permutations sized to the level against the fixed 500.

A permutation p-value is never below 1 / (permutations + 1), and Holm multiplies the smallest
p-value by the number of checks: with 500 permutations and the 8 checks that run on `digits`
the embedding test's adjusted p-value is at least 0.016, so at level 0.01 it could never
drift. The checks now draw enough permutations (and Monte Carlo tables) for the level
(`drift.resamples_for`). This compares, on the same windows of every pool and size, the
level-0.01 verdict read off the level-0.05 report (500 permutations: what the run's "level
0.01" figures were) with the verdict of a check at level 0.01 itself, and the time of each:

    python -m benchmarks.monitoring.strict_level runs/bench/monitoring

It trains and runs no model: it reads the outputs a run of `benchmarks.monitoring.run` cached,
and draws the windows of each pool and size as that run does (fewer of them by default).
It prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.cached_run import add_run_arguments, chosen_bundles, run_outputs
from benchmarks.monitoring.measure import STRICT_LEVEL
from benchmarks.monitoring.reference_draws import profile_of

from mlfactory.monitoring.report import MonitorSettings, check_window


def bundle_rows(folder: Path, bundle_result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """One Markdown row per pool and window size of one bundle."""
    name = str(bundle_result["bundle"]["name"])
    bundle, outputs = run_outputs(folder, bundle_result)
    profile = profile_of(outputs[0][1], bundle.meta.labels)
    rows = []
    for index, (pool, out) in enumerate(outputs):
        if pool.kind == "reference":
            continue
        out.ood_scores = profile.ood.score(out.embeddings, out.early)
        count = args.windows if pool.kind == "none" else args.shift_windows
        for size in args.sizes:
            # The run's draws: the same windows as its drift figures, the first `count` of them.
            rng = np.random.default_rng([index, size])
            fixed, sized, embedding, seconds = [], [], [], [0.0, 0.0]
            for window_index in range(count):
                window = out.rows(rng.choice(len(out), size, replace=len(out) < size))
                logged = window.logged()
                started = time.perf_counter()
                default = check_window(profile, logged, {}, MonitorSettings(seed=window_index))
                seconds[0] += time.perf_counter() - started
                adjusted = [c.p_value for c in default.checks if c.p_value is not None]
                fixed.append(min(adjusted, default=1.0) <= STRICT_LEVEL)
                started = time.perf_counter()
                strict = check_window(
                    profile, logged, {}, MonitorSettings(seed=window_index, level=STRICT_LEVEL)
                )
                seconds[1] += time.perf_counter() - started
                sized.append(strict.drift)
                embedding.append(any(c.name == "embedding" and c.drift for c in strict.checks))
            rows.append(
                f"| {folder.name}/{name} | {pool.name} | {size} | {count} | "
                f"{np.mean(fixed):.3f} | {np.mean(sized):.3f} | {np.mean(embedding):.3f} | "
                f"{1000 * seconds[0] / count:.0f} | {1000 * seconds[1] / count:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="The verdict at level 0.01 (docstring).")
    add_run_arguments(parser)
    parser.add_argument("--windows", type=int, default=200, help="no-shift windows per size")
    parser.add_argument("--shift-windows", type=int, default=50, help="per shift and size")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    lines = [
        f"Share of windows flagged at level {STRICT_LEVEL} (no shift: false alarms; shifts: "
        "power), read off the level-0.05 report (500 permutations) and checked at the level "
        "(permutations and tables sized to it); the share where the embedding check itself "
        "drifted at the level; milliseconds per check of each.",
        "",
        "| bundle | pool | window | windows | 500 permutations | sized to the level | "
        "embedding drifted | ms, level 0.05 | ms, level 0.01 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for folder, bundle_result in chosen_bundles(args):
        lines += bundle_rows(folder, bundle_result, args)
    print("\n".join(lines))
    print(f"\n{(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
