"""Label-free accuracy estimates side by side, on every model of several benchmark runs.

The issue's target for the estimated accuracy is to be closer to the true accuracy than the mean
raw confidence under each shift. One run measures it on one trained model; this sets the
estimates of every model of several runs side by side, from the outputs those runs cached (it
trains and runs no model):

- `confidence`: the mean raw top probability (the baseline);
- `CBPE`: the mean calibrated top probability (the first release's estimate);
- `ATC, one threshold`: the share above the threshold fitted on the whole reference;
- `ATC, 200 resampled thresholds`: the share averaged over thresholds fitted on bootstrap
  resamples of the reference (mlfactory's estimate);
- `ATC, OOD counted wrong`: the same, with every input the OOD score flags (the profile's 1 %
  threshold) counted as wrong, on the reference (where the threshold is fitted) and the pool.

    python -m benchmarks.monitoring.estimators runs/bench/monitoring runs/bench/seed-1 ...

It prints Markdown: per model the shifted pools (every kind but no shift and label-prior) on which
each estimate is closer than the mean confidence and its mean absolute error there, then the
totals; `--pools` adds a row per model and pool.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.across_runs import load_run
from benchmarks.monitoring.cached_run import run_outputs
from benchmarks.monitoring.outputs import Outputs

from mlfactory.monitoring.accuracy import ConfidenceThreshold, calibrate
from mlfactory.monitoring.profile import ReferenceProfile, label_indices, load_profile

# An error smaller than the mean confidence's by at least this counts as closer: half the last
# digit the tables show (CBPE at temperature 1 is the mean confidence, to float rounding).
CLOSER_BY = 5e-4
# Pools whose accuracy moves: no shift and label-prior leave it within sampling error of the
# reference, where every estimate is about as close as the mean confidence.
SHIFTED = ("corruption", "source", "classes", "mixture")
Estimator = Callable[[Outputs], float]


@dataclass
class PoolErrors:
    """One pool of one model: the true accuracy and each estimate's absolute error."""

    model: str
    pool: str
    kind: str
    accuracy: float
    errors: dict[str, float]


def estimators(reference: Outputs, profile: ReferenceProfile) -> dict[str, Estimator]:
    """Each estimate as a function of a pool's outputs (OOD scores set), fitted on the reference."""
    truth = label_indices([label or "" for label in reference.labels], profile.labels)
    confidence = _top(reference, profile)
    correct = reference.probabilities.argmax(axis=1) == truth
    one = ConfidenceThreshold.fit(confidence, correct, resamples=0)
    bagged = ConfidenceThreshold.fit(confidence, correct)
    gated = ConfidenceThreshold.fit(_unflagged(confidence, reference, profile), correct)
    return {
        "confidence": lambda out: float(out.probabilities.max(axis=1).mean()),
        "CBPE": lambda out: float(_top(out, profile).mean()),
        "ATC, one threshold": lambda out: one.share(_top(out, profile)),
        "ATC, 200 resampled thresholds": lambda out: bagged.share(_top(out, profile)),
        "ATC, OOD counted wrong": lambda out: gated.share(
            _unflagged(_top(out, profile), out, profile)
        ),
    }


def _top(out: Outputs, profile: ReferenceProfile) -> np.ndarray:
    """The calibrated top probability of every input."""
    return calibrate(out.probabilities, profile.temperature).max(axis=1)


def _unflagged(confidence: np.ndarray, out: Outputs, profile: ReferenceProfile) -> np.ndarray:
    """`confidence`, with -inf (below any threshold) where the OOD score flags the input."""
    assert out.ood_scores is not None
    return np.where(out.ood_scores > profile.ood.threshold, -np.inf, confidence)


def model_errors(folder: Path, bundle_result: dict[str, Any]) -> list[PoolErrors]:
    """Every pool's errors for one bundle of one run (its cached outputs and saved profile)."""
    name = str(bundle_result["bundle"]["name"])
    profile = load_profile(folder / "profiles" / name)
    if profile is None:
        raise SystemExit(f"error: no profile in {folder / 'profiles' / name}: run the benchmark")
    _, outputs = run_outputs(folder, bundle_result)
    for _, out in outputs:  # what the server logs with each prediction
        out.ood_scores = profile.ood.score(out.embeddings, out.early)
    fitted = estimators(outputs[0][1], profile)
    model = f"{folder.name}/{name}"
    rows = []
    for pool, out in outputs[1:]:
        truth = label_indices([label or "" for label in out.labels], profile.labels)
        accuracy = float(np.mean(out.probabilities.argmax(axis=1) == truth))
        errors = {key: abs(fn(out) - accuracy) for key, fn in fitted.items()}
        rows.append(PoolErrors(model, pool.name, pool.kind, accuracy, errors))
    return rows


def markdown(rows: list[PoolErrors], per_pool: bool) -> str:
    names = list(rows[0].errors)
    estimates = names[1:]
    head = " | ".join(estimates)
    lines = [
        "Shifted pools on which each estimate is closer to the true accuracy than the mean "
        "confidence, and (in brackets) its mean absolute error on them.",
        "",
        f"| model | pools | confidence | {head} |",
        "|---|---:|---:|" + "---:|" * len(estimates),
    ]
    models = list(dict.fromkeys(row.model for row in rows))
    shifted = [row for row in rows if row.kind in SHIFTED]
    for model in [*models, "all"]:
        mine = [row for row in shifted if model in ("all", row.model)]
        base = np.mean([row.errors["confidence"] for row in mine])
        cells = []
        for key in estimates:
            closer = sum(row.errors[key] < row.errors["confidence"] - CLOSER_BY for row in mine)
            cells.append(f"{closer}/{len(mine)} ({np.mean([row.errors[key] for row in mine]):.3f})")
        label = f"**{model}**" if model == "all" else model
        lines.append(f"| {label} | {len(mine)} | ({base:.3f}) | {' | '.join(cells)} |")
    worst = [
        f"{key}: {max(row.errors[key] - row.errors['confidence'] for row in shifted):+.3f}"
        for key in estimates
    ]
    lines += ["", "Largest excess over the mean confidence's error: " + "; ".join(worst) + "."]
    if per_pool:
        lines += [
            "",
            f"| model | pool | kind | true | {' | '.join(names)} |",
            "|---|---|---|---:|" + "---:|" * len(names),
        ]
        for row in rows:
            cells = " | ".join(f"{row.errors[key]:.3f}" for key in names)
            where = f"{row.model} | {row.pool} | {row.kind}"
            lines.append(f"| {where} | {row.accuracy:.3f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="Accuracy estimates across runs (see docstring).")
    parser.add_argument("folders", type=Path, nargs="+", help="the --out folders of the runs")
    parser.add_argument("--pools", action="store_true", help="also a row per model and pool")
    args = parser.parse_args(argv)
    rows: list[PoolErrors] = []
    for folder in args.folders:
        for bundle_result in load_run(folder)["bundles"]:
            rows += model_errors(folder, bundle_result)
    print(markdown(rows, args.pools))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
