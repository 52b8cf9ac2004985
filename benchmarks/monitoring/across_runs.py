"""The monitoring benchmark's targets across runs: which hold for every trained model, which flip.

A bundle trained again with another seed, or on a CPU whose float kernels round differently, is
another model, and each target of a run is one measurement of one model. Give this the `--out`
folders of several runs of `benchmarks.monitoring.run` (each holds a results.json):

    python -m benchmarks.monitoring.across_runs runs/bench/monitoring runs/bench/seed-1

It prints Markdown: a line per run and bundle (the seed, the test accuracy, the OOD threshold),
then per target each run's figures with PASS or FAIL and how many runs met it. By default only
the targets that some run missed are listed; `--all` lists every one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.monitoring.report import Target, targets


def load_run(folder: Path) -> dict[str, Any]:
    """The results.json of one run's `--out` folder."""
    path = folder / "results.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: run benchmarks.monitoring.run --out {folder}")
    results: dict[str, Any] = json.loads(path.read_text())
    return results


def seed_of(bundle: dict[str, Any]) -> str:
    """The `seed=` override a bundle was trained with, or "recipe" for the recipe's own."""
    seeds = [o.split("=", 1)[1] for o in bundle["bundle"]["overrides"] if o.startswith("seed=")]
    return seeds[-1] if seeds else "recipe"


def markdown(runs: dict[str, dict[str, Any]], show_all: bool = False) -> str:
    """The models of each run, then the targets side by side."""
    lines = [
        "| run | bundle | seed | started | test accuracy | OOD threshold |",
        "|---|---|---|---|---:|---:|",
    ]
    for label, results in runs.items():
        for bundle in results["bundles"]:
            lines.append(
                f"| {label} | {bundle['bundle']['name']} | {seed_of(bundle)} | "
                f"{results['started']} | {bundle['bundle']['test_accuracy']:.3f} | "
                f"{bundle['profile']['threshold']:.3f} |"
            )
    measured: dict[str, dict[str, Target]] = {}
    for label, results in runs.items():
        for target in targets(results):
            measured.setdefault(target.text, {})[label] = target
    header = " | ".join(runs)
    lines += ["", f"| target | {header} | met in |", "|---|" + "---|" * len(runs) + "---:|"]
    for text, by_run in measured.items():
        met = sum(t.passed for t in by_run.values())
        if met == len(by_run) and not show_all:  # every run that measured it met it
            continue
        cells = " | ".join(
            f"{'PASS' if by_run[r].passed else 'FAIL'} {by_run[r].figure}" if r in by_run else "—"
            for r in runs
        )
        lines.append(f"| {text} | {cells} | {met}/{len(by_run)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Targets across runs (see the module docstring).")
    parser.add_argument("folders", type=Path, nargs="+", help="the --out folders of the runs")
    parser.add_argument("--all", action="store_true", help="also the targets every run met")
    args = parser.parse_args(argv)
    runs = {folder.name: load_run(folder) for folder in args.folders}
    if len(runs) < len(args.folders):
        print("error: give runs whose folders have distinct names", file=sys.stderr)
        return 2
    print(markdown(runs, args.all))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
