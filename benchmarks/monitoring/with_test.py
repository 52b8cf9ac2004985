"""The validation split against the validation and test splits as the reference, side by side.

`mlfactory profile BUNDLE --with-test` builds a bundle's reference from both held-out splits:
twice the inputs, for a validation split that is right more or less often than the data. This
reads a run made with `--with-test` (its reference pool is the validation split followed by the
test split; its unseen inputs leave the test split out), builds the profile both ways from the
cached outputs, as the export does, and checks the very same windows of every pool with each:

    python -m benchmarks.monitoring.run --bundles digits --with-test --out runs/bench/with-test
    python -m benchmarks.monitoring.with_test runs/bench/with-test --bundles digits

It trains and runs no model. It prints Markdown: per bundle and pool, the share of windows
flagged at level 0.05 (in brackets 0.01) with each reference (false alarms on the unshifted
pool, power on the others), then the estimated accuracy's error with each reference against the
mean raw confidence's, on each whole pool.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring import measure
from benchmarks.monitoring.cached_run import add_run_arguments, chosen_bundles, run_outputs
from benchmarks.monitoring.outputs import Outputs
from benchmarks.monitoring.pools import Pool, bundle_dataset
from benchmarks.monitoring.reference_draws import profile_of

from mlfactory.monitoring.profile import VALIDATION, VALIDATION_AND_TEST, ReferenceProfile


def both_profiles(
    bundle_result: dict[str, Any], folder: Path
) -> tuple[list[tuple[Pool, Outputs]], dict[str, ReferenceProfile]]:
    """The run's pools, and the profile built on the validation split alone and on both."""
    if not bundle_result["bundle"].get("with_test"):
        raise SystemExit(f"error: {folder} was not run with --with-test")
    bundle, outputs = run_outputs(folder, bundle_result)
    reference = outputs[0][1]
    n_validation = len(bundle_dataset(bundle)[1].split("val"))
    validation = reference.rows(np.arange(n_validation))
    labels = bundle.meta.labels
    profiles = {
        f"validation ({n_validation})": profile_of(validation, labels, VALIDATION),
        f"validation + test ({len(reference)})": profile_of(reference, labels, VALIDATION_AND_TEST),
    }
    return outputs, profiles


def bundle_lines(
    folder: Path, bundle_result: dict[str, Any], args: argparse.Namespace
) -> list[str]:
    name = str(bundle_result["bundle"]["name"])
    started = time.perf_counter()
    outputs, profiles = both_profiles(bundle_result, folder)
    flagged: dict[str, dict[tuple[str, int], tuple[float, float]]] = {}
    errors: dict[str, dict[str, dict[str, float]]] = {}
    for label, profile in profiles.items():
        pools = [(pool, _scored(out, profile)) for pool, out in outputs]
        cells = measure.drift_cells(
            profile, outputs[0][1], pools, (args.windows, args.shift_windows), (0, 0), args.sizes
        )
        flagged[label] = {(c.pool, c.size): (c.ours, c.ours_strict) for c in cells}
        errors[label] = {row["pool"]: row for row in measure.accuracy_rows(profile, pools)}
    first, second = profiles
    lines = [f"**{folder.name}/{name}** ({(time.perf_counter() - started) / 60:.1f} min)", ""]
    lines += ["| pool | n | " + f"{first} | {second} |", "|---|---:|---:|---:|"]
    for pool, _ in outputs[1:]:
        for size in args.sizes:
            pair = [flagged[label][(pool.name, size)] for label in profiles]
            lines.append(
                f"| {pool.name} | {size} | "
                + " | ".join(f"{ours:.3f} ({strict:.3f})" for ours, strict in pair)
                + " |"
            )
    lines += ["", f"| pool | accuracy | mean confidence off by | {first} | {second} |"]
    lines.append("|---|---:|---:|---:|---:|")
    for pool, _ in outputs[1:]:
        rows = [errors[label][pool.name] for label in profiles]
        lines.append(
            f"| {pool.name} | {rows[0]['accuracy']:.3f} | {rows[0]['confidence_error']:.3f} | "
            + " | ".join(f"{row['error']:.3f}" for row in rows)
            + " |"
        )
    return [*lines, ""]


def _scored(out: Outputs, profile: ReferenceProfile) -> Outputs:
    """`out` with the OOD scores this profile gives (what the server would log with it)."""
    scored = out.rows(np.arange(len(out)))
    scored.ood_scores = profile.ood.score(out.embeddings, out.early)
    return scored


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="Two references side by side (docstring).")
    add_run_arguments(parser)
    parser.add_argument("--windows", type=int, default=400, help="unshifted windows per size")
    parser.add_argument("--shift-windows", type=int, default=100, help="windows per shift, size")
    args = parser.parse_args(argv)
    lines = [
        "Share of windows flagged at level 0.05 (in brackets 0.01), the same windows with each "
        "reference: false alarms on `unseen`, power on the shifts.",
        "",
    ]
    for folder, bundle_result in chosen_bundles(args):
        lines += bundle_lines(folder, bundle_result, args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
