"""False alarms with other draws of the reference: how much of a rate is the reference's luck.

The run's false-alarm rate checks hundreds of unshifted windows against one reference, the
bundle's validation split. Every test's level holds over draws of both samples; for one fixed
reference, the rate over windows can sit above or below the level, the more so the larger the
window (a large window looks like the whole population, so it repeats whatever offset the
reference happened to have). This draws the reference again and again from the validation and
unseen inputs together (same size as the bundle's, or `--reference-rows`), builds the profile on
each draw as the export does, and checks unshifted windows of the remaining inputs:

    python -m benchmarks.monitoring.reference_draws runs/bench/monitoring --bundles digits,speech

It trains and runs no model: it reads the outputs a run of `benchmarks.monitoring.run` cached.
It prints Markdown: per bundle and window size, the false-alarm rate with the run's own
reference, then over all the draws together, and the spread of the rate between draws.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.cached_run import add_run_arguments, chosen_bundles, run_outputs
from benchmarks.monitoring.outputs import Outputs

from mlfactory.monitoring.profile import VALIDATION, ReferenceProfile, build_profile
from mlfactory.monitoring.report import MonitorSettings, check_window


def joined(first: Outputs, second: Outputs) -> Outputs:
    """The rows of both, `first`'s before `second`'s."""
    early = None
    if first.early is not None and second.early is not None:
        early = np.concatenate([first.early, second.early])
    return Outputs(
        f"{first.name} + {second.name}",
        np.concatenate([first.embeddings, second.embeddings]),
        np.concatenate([first.probabilities, second.probabilities]),
        [*first.summaries, *second.summaries],
        [*first.labels, *second.labels],
        early,
    )


def profile_of(reference: Outputs, labels: list[str], source: str = VALIDATION) -> ReferenceProfile:
    """The profile the export would build on these reference rows (`source`: where they came
    from, as `profile.json` says)."""
    return build_profile(
        reference.embeddings,
        reference.probabilities,
        [label or "" for label in reference.labels],
        reference.summaries,
        labels,
        source=source,
        early_features=reference.early,
    )


def alarm_rates(
    profile: ReferenceProfile, rest: Outputs, windows: int, sizes: tuple[int, ...], seed: int
) -> dict[int, float]:
    """The share of `windows` random windows of `rest` per size that the checks call drift."""
    rest.ood_scores = profile.ood.score(rest.embeddings, rest.early)
    rates = {}
    for size in sizes:
        rng = np.random.default_rng([seed, size])
        alarms = 0
        for index in range(windows):
            window = rest.rows(rng.choice(len(rest), size, replace=False))
            logged = window.logged()
            report = check_window(profile, logged, {}, MonitorSettings(seed=index))
            alarms += report.drift
        rates[size] = alarms / windows
    return rates


def bundle_rows(
    folder: Path,
    bundle_result: dict[str, Any],
    args: argparse.Namespace,
) -> list[str]:
    name = str(bundle_result["bundle"]["name"])
    bundle, outputs = run_outputs(folder, bundle_result, count=2)
    (_, reference), (_, unseen) = outputs
    labels = bundle.meta.labels
    n_reference = args.reference_rows or len(reference)
    started = time.perf_counter()
    own = alarm_rates(profile_of(reference, labels), unseen, args.windows, args.sizes, 0)
    both = joined(reference, unseen)
    draws: list[dict[int, float]] = []
    for draw in range(args.references):
        order = np.random.default_rng(1000 + draw).permutation(len(both))
        drawn = both.rows(order[:n_reference])
        rest = both.rows(order[n_reference:])
        draws.append(alarm_rates(profile_of(drawn, labels), rest, args.windows, args.sizes, draw))
    seconds = time.perf_counter() - started
    rows = []
    for size in args.sizes:
        rates = np.array([d[size] for d in draws])
        rows.append(
            f"| {folder.name}/{name} | {len(reference)} / {n_reference} | {size} | "
            f"{own[size]:.3f} | {rates.mean():.3f} | {np.median(rates):.3f} | "
            f"{rates.min():.3f} to {rates.max():.3f} | {np.mean(rates > 0.05):.2f} |"
        )
    print(f"{folder.name}/{name}: {seconds / 60:.1f} min", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="False alarms over reference draws (docstring).")
    add_run_arguments(parser)
    parser.add_argument("--references", type=int, default=20, help="reference draws per bundle")
    parser.add_argument("--windows", type=int, default=100, help="unshifted windows per size")
    parser.add_argument(
        "--reference-rows", type=int, default=0, help="rows per drawn reference (0: the bundle's)"
    )
    args = parser.parse_args(argv)
    lines = [
        f"False alarms (level 0.05) on {args.windows} unshifted windows per size: with the run's "
        f"own reference, then with each of {args.references} references drawn again from the "
        "validation and unseen inputs together (the windows from the inputs not drawn).",
        "",
        "| bundle | reference rows (run / drawn) | window | own reference | all draws | median "
        "draw | range over draws | share of draws above 0.05 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for folder, bundle_result in chosen_bundles(args):
        lines += bundle_rows(folder, bundle_result, args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
