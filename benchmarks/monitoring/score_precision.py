"""How far float32 takes the OOD score from its float64 value, per scorer of each benchmark model.

The Mahalanobis score is computed from an expanded distance (`DistanceTerms`): terms fixed per
class plus products with the input. When the scorer's residual variance is small, those terms
are far larger than the distance itself, and float32 cancels them into an error that grows with
the ratio of the inverse residual variance to the width. `OodScorer` therefore scores in float64
above `FLOAT64_ABOVE`; this measures the error that threshold rests on, on the unseen inputs
of each model of the given runs (the outputs their `benchmarks.monitoring.run` cached):

    python -m benchmarks.monitoring.score_precision runs/bench/monitoring runs/bench/seed-1 ...

It prints Markdown: per model and scorer (the embedding's, and the early features' when the
score reads them), the ratio, whether the profile scores in float64, and the largest difference
of the float32 score from the float64 one, relative to |score| + 1 as the export's check of the
in-graph score measures it (`SCORE_RTOL`, 1e-3).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from benchmarks.monitoring.across_runs import load_run
from benchmarks.monitoring.cached_run import run_outputs

from mlfactory.monitoring.ood import FLOAT64_ABOVE, OodScorer
from mlfactory.monitoring.profile import load_profile


def float32_error(scorer: OodScorer, rows: np.ndarray) -> float:
    """Largest |float32 - float64| / (|float64| + 1) of the scorer's own score on `rows`."""
    alone = replace(scorer, early=None)
    exact = replace(alone, float64=True).score(rows)
    rounded = replace(alone, float64=False).score(rows)
    return float(np.max(np.abs(rounded - exact) / (np.abs(exact) + 1.0)))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="float32 error of the OOD score (docstring).")
    parser.add_argument("folders", type=Path, nargs="+", help="the --out folders of the runs")
    args = parser.parse_args(argv)
    print(f"Scorers score in float64 above a ratio of {FLOAT64_ABOVE:g}.\n")
    columns = "model | scorer | width | inverse residual variance / width | float64 | float32 error"
    print(f"| {columns} |")
    print("|---|---|---:|---:|---|---:|")
    for folder in args.folders:
        for bundle_result in load_run(folder)["bundles"]:
            name = str(bundle_result["bundle"]["name"])
            profile = load_profile(folder / "profiles" / name)
            if profile is None:
                raise SystemExit(f"error: no profile in {folder / 'profiles' / name}")
            _, outputs = run_outputs(folder, bundle_result)
            unseen = next(out for pool, out in outputs if pool.kind == "none")
            parts = [("embedding", profile.ood, unseen.embeddings)]
            if profile.ood.early is not None and unseen.early is not None:
                parts.append(("early features", profile.ood.early, unseen.early))
            for part, scorer, rows in parts:
                width = rows.shape[1]
                ratio = scorer.distance_terms().residual / width
                print(
                    f"| {folder.name}/{name} | {part} | {width} | {ratio:.3g} | "
                    f"{'yes' if scorer.float64 else 'no'} | {float32_error(scorer, rows):.2g} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
