"""Structured pruning (`model.prune_channels`, `model.prune_heads`): what each share removed
costs in accuracy and gives in size and speed, side by side in one run, through the real
`train()`.

    python benchmarks/pruning.py                      # digits, shares 0 0.25 0.5 0.75
    python benchmarks/pruning.py emotions --epochs 10 --shares 0,0.25,0.5 --out runs/bench/pruning
    python benchmarks/pruning.py emotions --shares 0,0.25,0.5 --out runs/bench/pruning --reuse
    python benchmarks/pruning.py news --shares 0,0.25,0.5 --out runs/bench/pruning
    python benchmarks/pruning.py news --shares 0,0.5,heads:0.25,heads:0.5,both:0.5 \
        --out runs/bench/pruning --reuse

A share alone is of the channels (`model.prune_channels`: a CNN's convolution channels, a
transformer's feed-forward neurons); `heads:S` is of each attention block's heads
(`model.prune_heads`), `both:S` sets both.

For every recipe, one training per share on the same prepared data and schedule (share 0 is
the recipe as it is), then the bundles' ONNX models are timed in ONNX Runtime in alternating
rounds (each round runs every model for `--seconds`), on batches of 16 and of 1 encoded test
items. It prints per share the parameters of the exported model, the size of `model.onnx`, the
test accuracy, the seconds of the whole `train()` call (the first share's also encodes the
splits into the encoded-input cache, which the others read), and the items per second with their
ratio to share 0 (the median over rounds of the per-round ratio). The figures are this
machine's; the ratios are what to compare. `--reuse` times the bundles an earlier run left
in `--out` again, without training, and trains only the shares it finds none for.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from mlfactory.bundle import Bundle
from mlfactory.config.loader import load_recipe
from mlfactory.predictor import Predictor
from mlfactory.training.train import train

# The recipes' own schedules, shortened where a full one takes long on 2 cores; every share
# of a recipe trains the same.
RECIPE_OVERRIDES = {
    "digits": ["trainer.max_epochs=3"],
    "mushrooms": ["trainer.max_epochs=3", "trainer.patience=3"],
    "emotions": ["trainer.max_epochs=4", "trainer.patience=4"],
    "birdcalls": ["trainer.max_epochs=12", "trainer.patience=12"],
    "news": ["trainer.max_epochs=3", "trainer.patience=3"],  # the recipe's 3 epochs, no early stop
}
BATCHES = (16, 1)


# The settings a share can set: a share alone sets `model.prune_channels`.
KINDS = {
    "channels": ("model.prune_channels",),
    "heads": ("model.prune_heads",),
    "both": ("model.prune_channels", "model.prune_heads"),
}


@dataclass(frozen=True)
class Share:
    kind: str  # a key of KINDS
    share: float

    @classmethod
    def parse(cls, text: str) -> Share:
        kind, _, share = text.rpartition(":")
        if (kind or "channels") not in KINDS:
            raise ValueError(f"{text!r}: the kind before ':' is one of {', '.join(KINDS)}")
        return cls(kind or "channels", float(share))

    @property
    def overrides(self) -> list[str]:
        return [f"{setting}={self.share}" for setting in KINDS[self.kind]]

    @property
    def run_name(self) -> str:
        # Channel shares and the unpruned recipe keep the names of earlier runs.
        return (
            f"share-{self.share}"
            if self.kind == "channels" or not self.share
            else (f"{self.kind}-{self.share}")
        )

    def __str__(self) -> str:
        return f"{self.share:.2f}" if self.kind == "channels" else f"{self.kind} {self.share:.2f}"


@dataclass
class Trained:
    share: Share
    bundle: Bundle
    accuracy: float
    seconds: float | None  # None: a bundle of an earlier run (--reuse)
    test_inputs: list[bytes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", default=["digits"])
    parser.add_argument(
        "--shares", default="0,0.25,0.5,0.75", help="comma-separated, 0 first; heads:S, both:S"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="per model and round")
    parser.add_argument("--epochs", type=int, default=None, help="train this many (no early stop)")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--reuse", action="store_true", help="time the bundles an earlier run left in --out"
    )
    args = parser.parse_args()
    try:
        shares = [Share.parse(share) for share in args.shares.split(",")]
    except ValueError as exc:
        parser.error(f"--shares: {exc}")
    if shares[0].share != 0:
        parser.error("--shares: start with 0, the unpruned recipe the ratios divide by")
    if args.reuse and args.out is None:
        parser.error("--reuse: name the earlier run's --out")
    out = args.out or Path(tempfile.mkdtemp(prefix="mlfactory-pruning-"))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; runs in {out}")
    for recipe in args.recipes:
        schedule = RECIPE_OVERRIDES.get(recipe, [])
        if args.epochs is not None:
            schedule = [f"trainer.max_epochs={args.epochs}", f"trainer.patience={args.epochs}"]
        runs = [
            trained_before(out / recipe / share.run_name, share)
            if args.reuse and (out / recipe / share.run_name / "bundle").is_dir()
            else train_share(recipe, schedule, share, out)
            for share in shares
        ]
        report(recipe, runs, timings(runs, args.rounds, args.seconds))


def train_share(recipe: str, schedule: list[str], share: Share, out: Path) -> Trained:
    overrides = [*schedule, *share.overrides]
    started = time.perf_counter()
    result = train(load_recipe(recipe, overrides), out / recipe / share.run_name, progress=False)
    seconds = time.perf_counter() - started
    test = [item.read_bytes() for item in result.dataset.split("test")[:16]]
    return Trained(share, result.bundle, float(result.metrics["accuracy"]), seconds, test)


def trained_before(run_dir: Path, share: Share) -> Trained:
    """The bundle an earlier run left in `run_dir`, with its recorded test accuracy."""
    from mlfactory.bundle import load_bundle
    from mlfactory.bundle_recipe import recipe_dataset

    bundle = load_bundle(run_dir / "bundle")
    _, dataset = recipe_dataset(bundle)
    test = [item.read_bytes() for item in dataset.split("test")[:16]]
    return Trained(share, bundle, float(bundle.meta.metrics["test"]["accuracy"]), None, test)


def timings(runs: list[Trained], rounds: int, seconds: float) -> dict[int, list[list[float]]]:
    """Items per second per batch size, round and run (alternating, so that every model sees
    the same state of the machine)."""
    predictors = [Predictor(run.bundle) for run in runs]
    encoded = [predictors[0].encode(raw) for raw in runs[0].test_inputs]
    per_batch: dict[int, list[list[float]]] = {}
    for size in BATCHES:
        batch = (encoded * size)[:size]
        for predictor in predictors:
            predictor.run(batch)  # warm-up
        per_batch[size] = [
            [_items_per_second(predictor, batch, seconds) for predictor in predictors]
            for _ in range(rounds)
        ]
    return per_batch


def _items_per_second(
    predictor: Predictor, batch: list[dict[str, np.ndarray]], seconds: float
) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.run(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)


def parameters(bundle: Bundle) -> int:
    model = onnx.load(str(bundle.model_path))
    return sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer)


def report(recipe: str, runs: list[Trained], per_batch: dict[int, list[list[float]]]) -> None:
    header = "| share | parameters | model.onnx | test accuracy | train() |"
    for size in BATCHES:
        header += f" items/s, batch {size} (ratio) |"
    print(f"\n{recipe}\n\n{header}\n|" + "---:|" * (5 + len(BATCHES)))
    for index, run in enumerate(runs):
        row = (
            f"| {run.share} | {parameters(run.bundle) / 1e6:.2f} M | "
            f"{run.bundle.model_path.stat().st_size / 1e6:.1f} MB | {run.accuracy:.3f} | "
            f"{'-' if run.seconds is None else f'{run.seconds:.0f} s'} |"
        )
        for size in BATCHES:
            rounds = per_batch[size]
            speed = statistics.median(r[index] for r in rounds)
            ratio = statistics.median(r[index] / r[0] for r in rounds)
            row += f" {speed:.0f} ({ratio:.2f}x) |"
        print(row)


if __name__ == "__main__":
    main()
