"""One bundle of a finished benchmark run, with the outputs that run cached for its pools."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.monitoring.across_runs import load_run, seed_of
from benchmarks.monitoring.bundles import bench_bundles
from benchmarks.monitoring.measure import SIZES
from benchmarks.monitoring.outputs import Outputs, pool_outputs
from benchmarks.monitoring.pools import Pool, all_pools

from mlfactory.bundle import Bundle, load_bundle
from mlfactory.predictor import Predictor


def run_outputs(
    folder: Path, bundle_result: dict[str, Any], count: int | None = None
) -> tuple[Bundle, list[tuple[Pool, Outputs]]]:
    """The bundle of one entry of a run's results.json and its pools' outputs (the first
    `count` pools, or all: reference, unseen, then the shifts), read from the run's cache."""
    name = str(bundle_result["bundle"]["name"])
    seed = seed_of(bundle_result)
    specs = bench_bundles(folder, None if seed == "recipe" else int(seed))
    spec = next(s for s in specs if s.name == name)
    bundle = load_bundle(spec.bundle_dir(folder))
    predictor = Predictor(bundle)
    cache = folder / "cache" / name
    pools = all_pools(bundle, bool(bundle_result["bundle"].get("with_test")))[:count]
    return bundle, [(pool, pool_outputs(predictor, pool, cache)) for pool in pools]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The finished runs to read, the bundles of them to take, and the window sizes."""
    parser.add_argument("folders", type=Path, nargs="+", help="the --out folders of the runs")
    parser.add_argument("--bundles", default="digits,news,speech", help="comma-separated names")
    parser.add_argument(
        "--sizes", type=lambda text: tuple(int(s) for s in text.split(",")), default=SIZES
    )


def chosen_bundles(args: argparse.Namespace) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each run folder with each of its results.json's bundle entries that `--bundles` names."""
    wanted = set(args.bundles.split(","))
    for folder in args.folders:
        for bundle_result in load_run(folder)["bundles"]:
            if bundle_result["bundle"]["name"] in wanted:
                yield folder, bundle_result
