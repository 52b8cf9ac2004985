"""Monitoring benchmark: OOD score, drift checks and estimated accuracy on real shifts.

For each of three real bundles (image `digits`, text `news`, audio `speech`, see `bundles.py`),
trained once with `mlfactory train` and reused:

1. the reference profile is built from the validation split, saved, and loaded back (size);
2. every pool (`pools.py`) goes through the bundle as the server runs it (`outputs.py`, cached);
3. OOD: AUROC of the profile's score against the maximum softmax probability, unseen inputs of
   the training source against each shifted or foreign pool; the flag rate at the threshold;
4. accuracy: true accuracy per pool next to the estimate (CBPE) and the mean raw confidence;
5. drift: the share of windows flagged, for no shift (false alarms) and each shift (power), at
   window sizes 50/100/200/500, by `check_window` and by Evidently's defaults on the same
   windows; the time per check of both, and of one 10,000-row window.

From the repository root (the venv needs the `bench` extra: evidently):

    python -m benchmarks.monitoring.run                         # everything (46-75 min on 2 cores)
    python -m benchmarks.monitoring.run --bundles digits --windows 50 --shift-windows 20   # quick
    python -m benchmarks.monitoring.run --bundles speech --seed 1 --out runs/bench/seed-1
    python -m benchmarks.monitoring.across_runs runs/bench/monitoring runs/bench/seed-1   # compare
    python -m benchmarks.monitoring.matched_alarms runs/bench/monitoring/results.json  # power at
    #   Evidently's false-alarm rate (also at the end of monitoring.md)
    python -m benchmarks.monitoring.run --bundles digits --with-test --out runs/bench/with-test
    python -m benchmarks.monitoring.run --bundles speech --out runs/bench/speech-val-4x \
        --override speech:data.max_per_class=500 --override speech:data.val_fraction=0.5 \
        --override speech:data.test_fraction=0.2      # the same training set, 4x the reference

Results go to `<out>/results.json` and `<out>/monitoring.md` (the block docs/benchmarks.md
quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.monitoring import matched_alarms, measure, report
from benchmarks.monitoring.bundles import BenchBundle, bench_bundles, ensure_bundle
from benchmarks.monitoring.outputs import pool_outputs
from benchmarks.monitoring.pools import all_pools

from mlfactory.bundle import load_bundle
from mlfactory.monitoring.profile import (
    VALIDATION,
    VALIDATION_AND_TEST,
    build_profile,
    load_profile,
)
from mlfactory.predictor import Predictor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Monitoring benchmark (see the module docstring).")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/monitoring"))
    parser.add_argument("--bundles", default="digits,news,speech")
    parser.add_argument("--windows", type=int, default=400, help="no-shift windows per size")
    parser.add_argument("--shift-windows", type=int, default=100, help="windows per shift and size")
    parser.add_argument(
        "--evidently-windows", type=int, default=400, help="of the no-shift ones, Evidently's"
    )
    parser.add_argument(
        "--evidently-shift-windows", type=int, default=50, help="of the shifted ones, Evidently's"
    )
    parser.add_argument("--reports", type=int, default=2, help="full Evidently reports timed")
    parser.add_argument(
        "--with-test",
        action="store_true",
        help="the reference is the validation and test splits (as `mlfactory profile "
        "--with-test` builds it); the unseen inputs then leave the test split out",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="train the bundles with this seed instead of the recipe's (the split stays: it is "
        "by content hash); give each seed its own --out",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="BUNDLE:KEY=VALUE",
        help="one more recipe override for one bundle (repeatable; give the run its own --out)",
    )
    return parser.parse_args(argv)


def with_overrides(specs: list[BenchBundle], overrides: list[str]) -> list[BenchBundle]:
    """`specs` with each `BUNDLE:KEY=VALUE` of `overrides` set on that bundle (replacing KEY)."""
    names = sorted(spec.name for spec in specs)
    for each in overrides:
        name, _, setting = each.partition(":")
        if name not in names or "=" not in setting:
            print(
                f"error: --override {each!r}: expected BUNDLE:KEY=VALUE, BUNDLE in {names}",
                file=sys.stderr,
            )
            raise SystemExit(2)
        key = setting.split("=", 1)[0] + "="
        specs = [
            spec
            if spec.name != name
            else replace(
                spec,
                overrides=(*(o for o in spec.overrides if not o.startswith(key)), setting),
            )
            for spec in specs
        ]
    return specs


def run_bundle(spec_name: str, args: argparse.Namespace) -> dict[str, Any]:
    specs = with_overrides(bench_bundles(args.out, args.seed), args.override)
    spec = next(s for s in specs if s.name == spec_name)
    bundle = load_bundle(ensure_bundle(spec, args.out))
    predictor = Predictor(bundle)
    print(f"{spec.name}: pools", flush=True)
    pools = all_pools(bundle, args.with_test)
    cache = args.out / "cache" / spec.name
    outputs = [(pool, pool_outputs(predictor, pool, cache)) for pool in pools]
    reference, unseen = outputs[0][1], outputs[1][1]
    started = time.perf_counter()
    built = build_profile(
        reference.embeddings,
        reference.probabilities,
        [label or "" for label in reference.labels],
        reference.summaries,
        bundle.meta.labels,
        source=VALIDATION_AND_TEST if args.with_test else VALIDATION,
        early_features=reference.early,
    )
    build_seconds = time.perf_counter() - started
    folder = args.out / "profiles" / spec.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    built.save(folder)
    profile = load_profile(folder)
    assert profile is not None
    size = sum(path.stat().st_size for path in folder.iterdir())
    for _, out in outputs:  # what the server logs with each prediction
        out.ood_scores = profile.ood.score(out.embeddings, out.early)
    print(f"{spec.name}: profile {size / 1e6:.2f} MB, built in {build_seconds:.1f} s", flush=True)
    result: dict[str, Any] = {
        "bundle": {
            "name": spec.name,
            "recipe": spec.recipe,
            "modality": bundle.meta.modality,
            "overrides": list(spec.overrides),
            "with_test": bool(args.with_test),
            "labels": bundle.meta.labels,
            "test_accuracy": bundle.meta.metrics.get("test", {}).get("accuracy"),
            "embedding_dim": int(reference.embeddings.shape[1]),
        },
        "pools": {pool.name: {"kind": pool.kind, "n": len(out)} for pool, out in outputs},
        "profile": {
            "bytes": size,
            "build_seconds": build_seconds,
            "temperature": profile.temperature,
            "threshold": profile.ood.threshold,
            **profile.meta,
        },
        "ood": measure.ood_rows(profile, unseen, outputs[2:]),
        "accuracy": measure.accuracy_rows(profile, outputs),
    }
    print(f"{spec.name}: drift", flush=True)
    cells = measure.drift_cells(
        profile,
        reference,
        outputs,
        (args.windows, args.shift_windows),
        (args.evidently_windows, args.evidently_shift_windows),
    )
    result["drift"] = [asdict(cell) for cell in cells]
    result["timing"] = measure.timing(profile, reference, unseen, args.reports)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Evidently's chi-square divides by empty expected counts, and its correlations by zero
    # spread (a constant image width): each warns once a window, drowning the progress lines.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m benchmarks.monitoring.run " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()} (nproc {os.cpu_count()})",
        "python": platform.python_version(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "bundles": [],
    }
    for name in args.bundles.split(","):
        results["bundles"].append(run_bundle(name, args))
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    results["seconds"] = (datetime.now(UTC) - started).total_seconds()
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    text = report.markdown(results) + "\n" + matched_alarms.markdown(results)
    (args.out / "monitoring.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
