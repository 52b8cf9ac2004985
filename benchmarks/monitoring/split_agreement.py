"""How often "the reference and the test split disagree" is said, and when.

Export compares the reference's accuracy (the validation split) with the test split's by
Fisher's exact test (`mlfactory.monitoring.split_agreement`) and says so, in its output and in
every report's notes, at p <= 0.05. This measures that test on the outputs a run of
`benchmarks.monitoring.run` cached (no model runs):

- **false alarms**: two disjoint draws from the unseen inputs, of the sizes of the bundle's
  validation and test splits (the test draw smaller when the unseen inputs are too few for
  both), are two samples of the same data; the share of such pairs the line flags;
- **power**: of those pairs, the ones whose reference-sized draw is right at a rate at least
  `--gap` away from all the unseen inputs' (a reference that misleads the estimate by that
  much), the share flagged;
- **the run's own reference** (its validation split) against test-sized draws of the unseen
  inputs: the share flagged.

    python -m benchmarks.monitoring.split_agreement runs/bench/matched-digits runs/bench/matched \
        --bundles digits,news,speech

It prints Markdown, one row per bundle.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.cached_run import add_run_arguments, chosen_bundles, run_outputs
from benchmarks.monitoring.outputs import Outputs

from mlfactory.monitoring.profile import label_indices
from mlfactory.monitoring.split_agreement import SPLITS_DISAGREE_AT, splits_p_value


def right_answers(out: Outputs, labels: list[str]) -> np.ndarray:
    """Whether the model was right on each input of `out`."""
    truth = label_indices([label or "" for label in out.labels], labels)
    return np.asarray(out.probabilities.argmax(axis=1) == truth)


def bundle_row(folder: Path, bundle_result: dict[str, Any], draws: int, gap: float) -> str:
    bundle, outputs = run_outputs(folder, bundle_result, count=2)
    labels = bundle.meta.labels
    reference, unseen = (right_answers(out, labels) for _, out in outputs)
    # the test split's size, or what the unseen inputs leave beside a reference-sized draw
    n_ref = len(reference)
    n_test = min(int(bundle.meta.metrics["test"]["split_size"]), len(unseen) - n_ref)
    if n_test < 1:
        raise SystemExit(f"error: {len(unseen)} unseen inputs, too few for two disjoint draws")
    rng = np.random.default_rng(0)
    truth = float(unseen.mean())
    flagged, off, own = [], [], []
    for _ in range(draws):
        order = rng.permutation(len(unseen))
        first, second = unseen[order[:n_ref]], unseen[order[n_ref : n_ref + n_test]]
        p_value = splits_p_value(float(first.mean()), n_ref, float(second.mean()), n_test)
        flagged.append(p_value <= SPLITS_DISAGREE_AT)
        off.append(abs(float(first.mean()) - truth) >= gap)
        test_like = unseen[rng.permutation(len(unseen))[:n_test]]
        own_p = splits_p_value(float(reference.mean()), n_ref, float(test_like.mean()), n_test)
        own.append(own_p <= SPLITS_DISAGREE_AT)
    hits, misled = np.asarray(flagged), np.asarray(off)
    power = f"{hits[misled].mean():.2f} of {misled.sum()}" if misled.any() else "no such draw"
    return (
        f"| {folder.name}/{bundle_result['bundle']['name']} | {n_ref} / {n_test} | "
        f"{reference.mean():.3f} | {truth:.3f} ({len(unseen)}) | {hits.mean():.3f} | {power} | "
        f"{np.mean(own):.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="The splits-disagree line (docstring).")
    add_run_arguments(parser)
    parser.add_argument("--draws", type=int, default=2000, help="pairs of draws per bundle")
    parser.add_argument("--gap", type=float, default=0.015, help="a misleading reference's gap")
    args = parser.parse_args(argv)
    lines = [
        f"Export's splits-disagree line (Fisher's exact test, p <= {SPLITS_DISAGREE_AT}) over "
        f"{args.draws} pairs of disjoint draws of the unseen inputs, sized as the bundle's "
        "validation and test splits.",
        "",
        "| bundle | validation / test rows | reference right | unseen right | false alarms | "
        f"power: flagged of the draws {args.gap} or more off | own reference flagged |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for folder, bundle_result in chosen_bundles(args):
        lines.append(bundle_row(folder, bundle_result, args.draws, args.gap))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
