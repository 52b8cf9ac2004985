"""Tests of a window's OOD scores against the held-out calibration scores, side by side.

A tenth of foreign inputs among normal ones moves the window's OOD scores too little for a
test of their whole distribution; `ood_fraction` counts the window's scores above the cut at
the OOD threshold instead (an exact beta-binomial test, `drift.exceedance_check`). This sets it
beside the same count at lower cuts (the calibration scores' 90th and 95th percentiles, where
more normal inputs lie above but more foreign ones too), a one-sided Mann-Whitney rank test
and the one-sided Kolmogorov-Smirnov test (the `ood_score` check), each alone on the same
windows of a finished run's unshifted and mixture pools, with the run's profile:

    python -m benchmarks.monitoring.ood_share_tests runs/bench/monitoring

It trains and runs no model: it reads the outputs the run cached. It prints Markdown: the share
of windows each test rejects at 0.05, and at 0.05 / the number of the bundle's checks (what one
check needs to decide the family alone under Holm's correction).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.cached_run import add_run_arguments, chosen_bundles, run_outputs
from scipy import stats

from mlfactory.monitoring.drift import exceedance_check
from mlfactory.monitoring.ood import OodScorer
from mlfactory.monitoring.profile import load_profile

LEVEL = 0.05
Test = Callable[[np.ndarray], float]
NAMES = (
    "above the threshold (ood_fraction)",
    "above the 95th percentile",
    "above the 90th percentile",
    "Mann-Whitney",
    "Kolmogorov-Smirnov (ood_score)",
)


def tests_of(scorer: OodScorer) -> list[Test]:
    """Each test of NAMES: window scores -> one-sided p-value against the calibration scores."""
    calibration = scorer.calibration_scores

    def above(cut: float) -> Test:
        return lambda window: float(
            exceedance_check("ood", "embedding", calibration, cut, window).p_value_raw
        )

    def percentile(q: float) -> float:
        return float(np.quantile(calibration.astype(np.float64), q, method="weibull"))

    return [
        above(scorer.threshold),
        above(percentile(0.95)),
        above(percentile(0.90)),
        lambda w: float(stats.mannwhitneyu(w, calibration, alternative="greater").pvalue),
        lambda w: float(stats.ks_2samp(w, calibration, alternative="less").pvalue),
    ]


def bundle_rows(folder: Path, bundle_result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    name = f"{folder.name}/{bundle_result['bundle']['name']}"
    bundle, outputs = run_outputs(folder, bundle_result)
    profile = load_profile(bundle.path)
    assert profile is not None, f"{bundle.path} has no profile"
    checks = len(bundle_result["drift"][0]["checks_fired"])
    tests = tests_of(profile.ood)
    rows = []
    for pool, out in outputs[1:]:
        if pool.kind not in ("none", "mixture"):
            continue
        scores = profile.ood.score(out.embeddings, out.early)
        for size in args.sizes:
            rng = np.random.default_rng(size)
            windows = [
                scores[rng.choice(len(scores), size, replace=False)] for _ in range(args.windows)
            ]
            cells = []
            for test in tests:
                p = np.array([test(window) for window in windows])
                cells.append(f"{np.mean(p < LEVEL):.2f} / {np.mean(p < LEVEL / checks):.2f}")
            rows.append(f"| {name} | {pool.name} | {size} | {' | '.join(cells)} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="Tests of the OOD scores (docstring).")
    add_run_arguments(parser)
    parser.add_argument("--windows", type=int, default=200, help="windows per pool and size")
    args = parser.parse_args(argv)
    rows: list[str] = []
    for folder, bundle_result in chosen_bundles(args):
        rows += bundle_rows(folder, bundle_result, args)
    print(
        f"Share of {args.windows} windows rejected at {LEVEL} / at {LEVEL} / the bundle's "
        "number of checks, each test alone.\n"
    )
    print(f"| bundle | pool | window | {' | '.join(NAMES)} |")
    print("|---|---|---:|" + "---:|" * len(NAMES))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
