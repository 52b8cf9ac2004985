"""The OOD score's nodes in the model call: the paired chain against two chains, by threads.

Export appends the OOD score that reads early features as one chain of 9 nodes
(`mlfactory.training.ood_graph_nodes.paired_nodes`); before, it appended two scorer chains and
their sum (15 nodes), which export still uses past `MAX_PAIRED_CLASSES`. This times one model
call on 4 real MNIST digits for three models built from the same digits bundle and profile:
plain (no scorer, no early features), with the two chains, and with the paired chain, each
in an ONNX Runtime session as the server opens it (`Bundle.session`: workers sleep between
calls) with 1 and with 2 intra-op threads. Blocks of 100 calls of each model run by turns;
it prints each model's median time and its extra over the plain model in the same round
(median and interquartile range), and the paired chain's difference from the two chains.

Needs `onnx` (the train extra). From the repository root:

    python -m benchmarks.monitoring.graph_threads --profile runs/bench/monitoring/profiles/digits \\
        --bundle runs/bench/monitoring/runs/digits/bundle
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.bare_model import strip_monitoring
from benchmarks.monitoring.ood_in_onnx import BATCH, mnist_pngs

from mlfactory.bundle import load_bundle
from mlfactory.modalities import stack_inputs
from mlfactory.monitoring.profile import ARRAYS_FILE, META_FILE
from mlfactory.training import ood_graph

CALLS_PER_BLOCK = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a digits bundle folder")
    parser.add_argument("--profile", type=Path, required=True, help="folder of its profile")
    parser.add_argument("--rounds", type=int, default=60, help="blocks of calls per model")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        models = build_models(args.bundle, args.profile, Path(folder))
        for threads in (1, 2):
            print(f"{threads} intra-op thread(s), {args.rounds} rounds of {CALLS_PER_BLOCK} calls")
            compare(models, threads, args.rounds)
    return 0


def build_models(source: Path, profile: Path, root: Path) -> dict[str, Path]:
    """Bundle copies: plain, the two-chain score, the paired chain."""
    models = {}
    for name in ("two chains", "paired chain"):
        path = Path(shutil.copytree(source, root / name.replace(" ", "-")))
        for file in (ARRAYS_FILE, META_FILE):
            shutil.copy2(profile / file, path / file)
        limit = ood_graph.MAX_PAIRED_CLASSES
        ood_graph.MAX_PAIRED_CLASSES = limit if name == "paired chain" else 0
        try:
            ood_graph.attach_ood_score(load_bundle(path), [])
        finally:
            ood_graph.MAX_PAIRED_CLASSES = limit
        models[name] = path
    plain = Path(shutil.copytree(models["paired chain"], root / "plain"))
    strip_monitoring(plain)  # no scorer, no early features
    return {"plain": plain, **models}


def compare(models: dict[str, Path], threads: int, rounds: int) -> None:
    calls: dict[str, tuple[Any, list[str], dict[str, np.ndarray]]] = {}
    raws = mnist_pngs(BATCH)
    for name, path in models.items():
        bundle = load_bundle(path)
        session, encoder = bundle.session(intra_op_threads=threads), bundle.encoder()
        outputs = [output.name for output in session.get_outputs()]
        calls[name] = (session, outputs, stack_inputs([encoder(raw) for raw in raws]))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, (session, outputs, feeds) in calls.items():
            block = []
            for _ in range(CALLS_PER_BLOCK):
                started = time.perf_counter()
                session.run(outputs, feeds)
                block.append(time.perf_counter() - started)
            times[name].append(float(np.median(block)) * 1e6)
    plain = np.array(times["plain"])
    for name, measured in times.items():
        extra = np.array(measured) - plain
        low, high = np.percentile(extra, [25, 75])
        print(
            f"  {name:13s} {np.median(measured):7.0f} us; over plain {np.median(extra):6.1f} us "
            f"(interquartile {low:.1f} to {high:.1f})"
        )
    difference = np.array(times["paired chain"]) - np.array(times["two chains"])
    print(
        f"  paired chain - two chains: {np.median(difference):.1f} us (interquartile "
        f"{np.percentile(difference, 25):.1f} to {np.percentile(difference, 75):.1f})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
