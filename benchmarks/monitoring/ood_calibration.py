"""Where one profile's OOD threshold lands: its rate on unseen inputs over calibration splits.

Split conformal calibration holds the rate at which the threshold flags in-distribution inputs
to the rate asked (1 %) on average over the draws of the held-out calibration scores; one
profile's rate is one draw, of law Beta(n + 1 - k, k) for the k-th smallest of n scores
(`OodScorer.rate_range`). This measures it on the bundles of a finished run of
`benchmarks.monitoring.run`: the scorer is fitted again on the bundle's reference (its
validation split) with other calibration splits (seeds), as the export fits it, and each
threshold's rate is counted on the run's unseen inputs of the same source:

- per bundle: the rate of the run's own profile, the rates over the splits (mean, median, 5th to
  95th percentile, range) and the law's mean and 90 % range for that many held-out scores;
- other thresholds on the same held-out scores, which lean on the scores' distribution to
  steady an extreme quantile: a generalized Pareto tail fitted above their 80th percentile,
  a Johnson SU distribution fitted to all of them; and the split-conformal threshold with half
  of the reference held out instead of 30 %: the mean rate and its root mean square distance
  from the rate asked;
- the share of each out-of-distribution and corrupted pool flagged, with the run's profile and
  over the splits.

    python -m benchmarks.monitoring.ood_calibration runs/bench/monitoring --splits 20

It trains and runs no model: it reads the outputs the run cached. It prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.cached_run import add_run_arguments, chosen_bundles, run_outputs
from benchmarks.monitoring.outputs import Outputs
from benchmarks.monitoring.pools import Pool
from scipy import stats

from mlfactory.monitoring.ood import CALIBRATION_FRACTION, DEFAULT_DIMS, OodScorer
from mlfactory.monitoring.profile import label_indices, load_profile

TAIL_FROM = 0.8  # the generalized Pareto tail is fitted to the scores above this quantile
HALF = 0.5
Threshold = Callable[[np.ndarray, float], float]


def pareto_tail(scores: np.ndarray, fpr: float) -> float:
    """The (1 - fpr) quantile of a generalized Pareto tail fitted above the TAIL_FROM quantile."""
    start = float(np.quantile(scores, TAIL_FROM))
    excess = scores[scores > start] - start
    shape, _, scale = stats.genpareto.fit(excess, floc=0.0)
    return start + float(stats.genpareto.ppf(1.0 - fpr / np.mean(scores > start), shape, 0, scale))


def johnson_su(scores: np.ndarray, fpr: float) -> float:
    """The (1 - fpr) quantile of a Johnson SU distribution fitted to the scores."""
    return float(stats.johnsonsu.ppf(1.0 - fpr, *stats.johnsonsu.fit(scores)))


THRESHOLDS: dict[str, Threshold] = {"Pareto tail": pareto_tail, "Johnson SU": johnson_su}


def fitted(
    reference: Outputs, labels: list[str], normalize: bool, seed: int, fraction: float
) -> OodScorer:
    """The scorer the export would fit on the reference, with calibration split `seed`."""
    return OodScorer.fit(
        reference.embeddings,
        label_indices(reference.labels, labels),
        dims=DEFAULT_DIMS,
        normalize=normalize,
        seed=seed,
        early_features=reference.early,
        calibration_fraction=fraction,
    )


def rates_over_splits(
    reference: Outputs,
    pools: list[tuple[Pool, Outputs]],
    labels: list[str],
    normalize: bool,
    splits: int,
) -> dict[str, Any]:
    """Per split: each threshold's rate on the unseen pool, and the share of each OOD pool the
    split-conformal threshold flags; the law's range for the held-out scores' count."""
    unseen = pools[0][1]
    found: dict[str, list[float]] = {"split conformal": [], "half held out": []}
    found |= {name: [] for name in THRESHOLDS}
    flagged: dict[str, list[float]] = {
        pool.name: [] for pool, _ in pools[1:] if pool.ood or pool.kind == "corruption"
    }
    for seed in range(splits):
        scorer = fitted(reference, labels, normalize, seed, CALIBRATION_FRACTION)
        scores = scorer.score(unseen.embeddings, unseen.early)
        found["split conformal"].append(float(np.mean(scores > scorer.threshold)))
        calibration = scorer.calibration_scores.astype(np.float64)
        for name, threshold in THRESHOLDS.items():
            with warnings.catch_warnings():  # scipy's fits warn of slow convergence
                warnings.simplefilter("ignore", RuntimeWarning)
                found[name].append(float(np.mean(scores > threshold(calibration, scorer.fpr))))
        for pool, outputs in pools[1:]:
            if pool.ood or pool.kind == "corruption":
                shifted = scorer.score(outputs.embeddings, outputs.early)
                flagged[pool.name].append(float(np.mean(shifted > scorer.threshold)))
        half = fitted(reference, labels, normalize, seed, HALF)
        found["half held out"].append(
            float(np.mean(half.score(unseen.embeddings, unseen.early) > half.threshold))
        )
    # Every split holds out as many rows, so the law is the same for all.
    law = scorer.rate_range(0.9)
    return {"rates": found, "flagged": flagged, "held_out": len(calibration), "law": law}


def bundle_tables(folder: Path, bundle_result: dict[str, Any], splits: int) -> list[list[str]]:
    """The bundle's rows of the three tables."""
    name = f"{folder.name}/{bundle_result['bundle']['name']}"
    bundle, outputs = run_outputs(folder, bundle_result)
    profile = load_profile(bundle.path)
    assert profile is not None, f"{bundle.path} has no profile"
    own = profile.ood
    reference, pools = outputs[0][1], outputs[1:]
    unseen = pools[0][1]
    own_rate = float(np.mean(own.is_ood(unseen.embeddings, unseen.early)))
    measured = rates_over_splits(reference, pools, profile.labels, own.normalize, splits)
    conformal = np.array(measured["rates"]["split conformal"])
    low, high = measured["law"]
    five, ninety_five = np.quantile(conformal, [0.05, 0.95])
    spread = [
        f"| {name} | {measured['held_out']} | {len(unseen)} | {own_rate:.2%} | "
        f"{conformal.mean():.2%} | {np.median(conformal):.2%} | {five:.2%} to {ninety_five:.2%} | "
        f"{conformal.min():.2%} to {conformal.max():.2%} | {own.fpr:.2%}, {low:.2%} to {high:.2%} |"
    ]
    estimators = [
        f"| {name} | {method} | {np.mean(rates):.2%} | "
        f"{np.sqrt(np.mean((np.array(rates) - own.fpr) ** 2)):.2%} | "
        f"{np.min(rates):.2%} to {np.max(rates):.2%} |"
        for method, rates in measured["rates"].items()
    ]
    foreign = {pool.name: out for pool, out in pools[1:] if pool.ood or pool.kind == "corruption"}
    own_shares = {
        pool: float(np.mean(own.is_ood(out.embeddings, out.early))) for pool, out in foreign.items()
    }
    pool_rows = [
        f"| {name} | {pool} | {own_shares[pool]:.2f} | {np.mean(shares):.2f} | "
        f"{np.min(shares):.2f} to {np.max(shares):.2f} |"
        for pool, shares in measured["flagged"].items()
    ]
    return [spread, estimators, pool_rows]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="The OOD threshold's rate (docstring).")
    add_run_arguments(parser)
    parser.add_argument("--splits", type=int, default=20, help="calibration splits per bundle")
    args = parser.parse_args(argv)
    tables: list[list[str]] = [[], [], []]
    for folder, bundle_result in chosen_bundles(args):
        for table, rows in zip(
            tables, bundle_tables(folder, bundle_result, args.splits), strict=True
        ):
            table += rows
    print(
        f"The OOD threshold's rate on the run's unseen inputs, over {args.splits} calibration "
        "splits of the bundle's reference, beside the split-conformal law.\n\n"
        "| bundle | held out | unseen inputs | run's profile | mean | median | 5th to 95th "
        "percentile | range | law: mean, 90 % range |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    print("\n".join(tables[0]))
    print(
        "\nOther thresholds on the same splits: the mean rate, its root mean square distance "
        "from the rate asked, and its range.\n\n"
        "| bundle | threshold | mean | RMS from asked | range |\n|---|---|---:|---:|---:|"
    )
    print("\n".join(tables[1]))
    print(
        "\nThe share of each out-of-distribution and corrupted pool flagged: by the run's "
        "profile, and over the splits.\n\n"
        "| bundle | pool | run's profile | mean | range |\n|---|---|---:|---:|---:|"
    )
    print("\n".join(tables[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
