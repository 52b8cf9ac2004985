"""False alarms and power against the reference's size: what a larger validation split buys.

The run checks every window against one reference, the bundle's validation split (378 to 1,517
rows in the benchmark). The tests compare two samples, so the reference's size bounds their
power as much as the window's: a tenth of foreign inputs in a window of 500 is 50 rows, set
against a reference sample of a few hundred. This draws references of several sizes from the
validation and unseen inputs together, builds the profile on each as the export does, and checks
windows of the inputs not drawn: unshifted ones (the false alarms), and ones in which each row is
replaced, with probability `MIXTURE_SHARE`, by an input of the bundle's foreign pool (the run's
mixture pools draw theirs from the same pools):

    python -m benchmarks.monitoring.reference_size runs/bench/monitoring --sizes 50,200,500

It trains and runs no model: it reads the outputs a run of `benchmarks.monitoring.run` cached.
It prints Markdown: per bundle, reference size and window size, the share of windows flagged
(level 0.05, Holm over every check), its mean over the draws and its range between draws, and the
share of mixed windows in which the embedding check and the OOD share check drifted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.bundles import UNSEEN_LANGUAGES
from benchmarks.monitoring.cached_run import add_run_arguments, chosen_bundles, run_outputs
from benchmarks.monitoring.outputs import Outputs
from benchmarks.monitoring.pools import MIXTURE_SHARE
from benchmarks.monitoring.reference_draws import joined, profile_of

from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import MonitorSettings, check_window

# The pool each bundle's mixture takes its foreign inputs from (benchmarks.monitoring.pools).
FOREIGN = {
    "digits": "tuxpaint photos",
    "news": "20 newsgroups",
    "speech": f"languages {'+'.join(UNSEEN_LANGUAGES)}",
}
# Checks whose share of drifted windows is shown beside the verdict.
SHOWN = ("embedding", "ood_fraction")


def window_rates(
    profile: ReferenceProfile,
    rest: Outputs,
    foreign: Outputs | None,
    windows: int,
    size: int,
    seed: int,
) -> dict[str, float]:
    """Over `windows` windows of `size` rows of `rest` (with foreign rows mixed in when
    `foreign` is given): the share flagged, and the share in which each `SHOWN` check drifted."""
    rng = np.random.default_rng([seed, size, foreign is not None])
    counts = dict.fromkeys(("drift", *SHOWN), 0)
    for index in range(windows):
        window = rest.rows(rng.choice(len(rest), size, replace=False))
        if foreign is not None:
            replaced = np.flatnonzero(rng.random(size) < MIXTURE_SHARE)
            others = foreign.rows(rng.choice(len(foreign), len(replaced), replace=False))
            window = _replace_rows(window, replaced, others)
        report = check_window(profile, window.logged(), {}, MonitorSettings(seed=index))
        counts["drift"] += report.drift
        for check in report.checks:
            if check.name in SHOWN:
                counts[check.name] += check.drift
    return {key: count / windows for key, count in counts.items()}


def _replace_rows(window: Outputs, rows: np.ndarray, others: Outputs) -> Outputs:
    """`window` with its `rows` replaced by the rows of `others`, in order."""
    keep = np.setdiff1d(np.arange(len(window)), rows)
    mixed = joined(window.rows(keep), others)
    assert window.ood_scores is not None and others.ood_scores is not None
    mixed.ood_scores = np.concatenate([window.ood_scores[keep], others.ood_scores])
    return mixed


def bundle_rows(folder: Path, bundle_result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    name = str(bundle_result["bundle"]["name"])
    bundle, outputs = run_outputs(folder, bundle_result)
    by_name = {pool.name: out for pool, out in outputs}
    reference, unseen, foreign = outputs[0][1], outputs[1][1], by_name[FOREIGN[name]]
    both = joined(reference, unseen)
    started = time.perf_counter()
    rows = []
    for factor in args.factors:
        n_reference = round(len(reference) * factor)
        if len(both) - n_reference < args.min_rest:
            continue
        draws: dict[tuple[int, str], list[dict[str, float]]] = {}
        for draw in range(args.references):
            order = np.random.default_rng(2000 + draw).permutation(len(both))
            profile = profile_of(both.rows(order[:n_reference]), bundle.meta.labels)
            rest = both.rows(order[n_reference:])
            rest.ood_scores = profile.ood.score(rest.embeddings, rest.early)
            foreign.ood_scores = profile.ood.score(foreign.embeddings, foreign.early)
            for size in args.sizes:
                for kind, mixed in (("none", None), ("mixture", foreign)):
                    rates = window_rates(profile, rest, mixed, args.windows, size, draw)
                    draws.setdefault((size, kind), []).append(rates)
        rows += [_row(name, n_reference, size, draws) for size in args.sizes]
    print(f"{folder.name}/{name}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return rows


def _row(
    name: str, n_reference: int, size: int, draws: dict[tuple[int, str], list[dict[str, float]]]
) -> str:
    """One table row: the rates' mean over the draws, and the range of the verdict's."""
    unshifted = np.array([rates["drift"] for rates in draws[(size, "none")]])
    mixture = {
        key: np.array([r[key] for r in draws[(size, "mixture")]]) for key in ("drift", *SHOWN)
    }
    flagged = mixture["drift"]
    return (
        f"| {name} | {n_reference} | {size} | {unshifted.mean():.3f} "
        f"({unshifted.min():.2f} to {unshifted.max():.2f}) | {flagged.mean():.2f} "
        f"({flagged.min():.2f} to {flagged.max():.2f}) | "
        + " | ".join(f"{mixture[key].mean():.2f}" for key in SHOWN)
        + " |"
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="Checks against the reference's size.")
    add_run_arguments(parser)
    parser.add_argument("--references", type=int, default=10, help="reference draws per size")
    parser.add_argument("--windows", type=int, default=100, help="windows per size and kind")
    parser.add_argument(
        "--factors",
        type=lambda text: tuple(float(s) for s in text.split(",")),
        default=(1.0, 2.0, 4.0),
        help="reference sizes, as multiples of the bundle's validation split",
    )
    parser.add_argument(
        "--min-rest", type=int, default=1000, help="fewest inputs left for the windows"
    )
    args = parser.parse_args(argv)
    lines = [
        f"Level 0.05, {args.references} reference draws per size, {args.windows} windows per "
        f"draw, size and kind; mixture: each row foreign with probability {MIXTURE_SHARE:g}.",
        "",
        "| bundle | reference rows | window | false alarms (range over draws) | mixture "
        "flagged (range) | embedding check drifted | OOD share check drifted |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for folder, bundle_result in chosen_bundles(args):
        lines += bundle_rows(folder, bundle_result, args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
