"""One bundle of a finished benchmark run, with the outputs that run cached for its pools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.monitoring.across_runs import seed_of
from benchmarks.monitoring.bundles import bench_bundles
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
    pools = all_pools(bundle)[:count]
    return bundle, [(pool, pool_outputs(predictor, pool, cache)) for pool in pools]
