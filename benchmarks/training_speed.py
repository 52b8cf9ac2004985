"""Training speed on CPUs: each recipe trained with and without the encoded-input cache and the
channels-last layout, side by side in one run, through the real `train()`.

    python benchmarks/training_speed.py               # digits mushrooms news emotions birdcalls
    python benchmarks/training_speed.py emotions birdcalls --out runs/bench/speed
    python benchmarks/training_speed.py mushrooms --set data.source=/data/stamps \
        --variant both --variant bf16 --deadline 400     # on a GPU: the recipe as users run it

For every recipe, the variants run one after the other on the same prepared data:

- `before`: `trainer.memory_format=contiguous trainer.encoded_cache_gb=0` (every epoch reads
  and encodes every item, NCHW weights: how training ran before both settings existed);
- `channels_last`: the layout alone; `cache`: the encoded inputs alone;
- `both`: the defaults, starting from an empty cache (it encodes the splits once);
- `both, reused`: the defaults again, over the rows `both` left (a rerun, a sweep's next trial);
- `compiled`: the defaults with `trainer.compile=true` (torch.compile, TorchInductor), over the
  same rows: its first epoch holds the compiling;
- `bf16`: the defaults with `trainer.precision=bf16-mixed` (autocast to bfloat16);
- `bf16, compiled`: both of the last two, over the same rows;
- `pruned 0.5`: the defaults with `model.prune_channels=0.5` (half of each convolution's
  channels removed before fine-tuning), over the same rows.

`--set KEY=VALUE` (repeated) adds an override to every run of every recipe, after the
benchmark's own schedule (`data.source=...` for a copy of the data, `trainer.max_epochs=...`).
`--deadline SECONDS` runs no variant that would start after that many seconds, and says so.
On a machine with a GPU, `trainer.accelerator=auto` trains on it; the header names the device.

`--variant NAME` (repeated) picks some of them, run in this order; the speed-ups divide the
first one's times.

It prints per variant the mean seconds of an epoch after the first (train + validation), the
first epoch, the whole `train()` call (data, fit, export, profile, evaluation), the test
accuracy, and each time's speed-up (the first variant's time divided by it). Text recipes
have no 2-d convolutions, so `channels_last` and `both` are skipped for them (the same as
`before` and `cache` there). The figures are times of this machine; the ratios are what to
compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from mlfactory.config.loader import load_recipe
from mlfactory.training.train import train

# Shorter than the recipes' schedules where a full one would take long on 2 cores; every
# variant of a recipe runs the same.
RECIPE_OVERRIDES = {
    "digits": ["trainer.max_epochs=3"],
    "mushrooms": ["trainer.max_epochs=3", "trainer.patience=3"],
    "news": ["trainer.max_epochs=3"],
    "emotions": ["trainer.max_epochs=4", "trainer.patience=4"],
    "birdcalls": ["trainer.max_epochs=12", "trainer.patience=12"],
}
VARIANTS = {
    "before": ["trainer.memory_format=contiguous", "trainer.encoded_cache_gb=0"],
    "channels_last": ["trainer.encoded_cache_gb=0"],
    "cache": ["trainer.memory_format=contiguous"],
    "both": [],
    "both, reused": [],
    "compiled": ["trainer.compile=true"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "bf16, compiled": ["trainer.precision=bf16-mixed", "trainer.compile=true"],
    "pruned 0.5": ["model.prune_channels=0.5"],
}
# What `python benchmarks/training_speed.py` runs without --variants.
DEFAULT_VARIANTS = ("before", "channels_last", "cache", "both", "both, reused")


class EpochTimer(Callback):
    """Wall seconds of each epoch: its training batches and its validation."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self._started)


def run_variant(
    recipe: str, variant: str, work: Path, data_cache: Path, extra: list[str]
) -> dict[str, Any]:
    if variant == "both":  # starts from an empty cache; "both, reused" then finds its rows
        shutil.rmtree(data_cache / "encoded", ignore_errors=True)
    overrides = [
        f"data.cache_dir={data_cache}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
        f"tracking.artifact_location={work / 'artifacts'}",
        *RECIPE_OVERRIDES.get(recipe, []),
        *extra,
        *VARIANTS[variant],
    ]
    timer = EpochTimer()
    started = time.perf_counter()
    result = train(
        load_recipe(recipe, overrides),
        work / recipe / variant.replace(", ", "-").replace(" ", "-"),
        progress=False,
        force=True,
        callbacks=[timer],
    )
    total = time.perf_counter() - started
    later = timer.seconds[1:] or timer.seconds
    return {
        "epochs": len(timer.seconds),
        "epoch_s": statistics.mean(later),
        "first_s": timer.seconds[0],
        "total_s": total,
        "accuracy": result.metrics["accuracy"],
    }


def device_name() -> str:
    """The GPU `trainer.accelerator=auto` trains on, or the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} (no GPU), torch {torch.__version__}"


def prepare_once(recipe: str, work: Path, data_cache: Path, extra: list[str]) -> None:
    """Prepares the data once, untimed: every variant then starts from the same cache."""
    overrides = [
        f"data.cache_dir={data_cache}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
        *extra,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.encoded_cache_gb=0",
        "trainer.compile=false",
    ]
    train(load_recipe(recipe, overrides), work / recipe / "warm-up", progress=False, force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipes", nargs="*", default=list(RECIPE_OVERRIDES))
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp one)")
    parser.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        help="run this variant (repeat it for more; default: the first five)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--deadline", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args()
    chosen = args.variant or DEFAULT_VARIANTS
    work = args.out or Path(tempfile.mkdtemp(prefix="training-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(
        f"# {device_name()}; {os.cpu_count()} cores, python {platform.python_version()}; "
        f"work folder {work}"
    )
    print(
        "| recipe | variant | epochs | s/epoch (2nd on) | speed-up | 1st epoch s | speed-up "
        "| train() s | speed-up | test acc |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for recipe in args.recipes:
        data_cache = work / "data" / recipe
        prepare_once(recipe, work, data_cache, args.set)
        convolutional = load_recipe(recipe).config.modality != "text"
        before: dict[str, Any] | None = None
        for variant in (name for name in VARIANTS if name in chosen):
            if not convolutional and variant in ("channels_last", "both"):
                continue  # the same as `before` / `cache` for a network without convolutions
            if args.deadline is not None and time.perf_counter() - started > args.deadline:
                print(f"| {recipe} | {variant} | not run: past --deadline {args.deadline:g} s |")
                continue
            row = run_variant(recipe, variant, work, data_cache, args.set)
            before = before or row
            print(
                f"| {recipe} | {variant} | {row['epochs']} | {row['epoch_s']:.2f} "
                f"| {before['epoch_s'] / row['epoch_s']:.2f} | {row['first_s']:.2f} "
                f"| {before['first_s'] / row['first_s']:.2f} | {row['total_s']:.1f} "
                f"| {before['total_s'] / row['total_s']:.2f} | {row['accuracy']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
