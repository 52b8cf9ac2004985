"""Training speed on CPUs: each recipe trained with and without the encoded-input cache and the
channels-last layout, side by side in one run, through the real `train()`.

    python benchmarks/training_speed.py               # digits mushrooms news emotions birdcalls
    python benchmarks/training_speed.py emotions birdcalls --out runs/bench/speed

For every recipe, the variants run one after the other on the same prepared data:

- `before`: `trainer.memory_format=contiguous trainer.encoded_cache_gb=0` (every epoch reads
  and encodes every item, NCHW weights: how training ran before both settings existed);
- `channels_last`: the layout alone; `cache`: the encoded inputs alone;
- `both`: the defaults, starting from an empty cache (it encodes the splits once);
- `both, reused`: the defaults again, over the rows `both` left (a rerun, a sweep's next trial);
- `compiled`: the defaults with `trainer.compile=true` (torch.compile, TorchInductor), over the
  same rows: its first epoch holds the compiling;
- `bf16`: the defaults with `trainer.precision=bf16-mixed` (autocast to bfloat16 on the CPU).

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


def run_variant(recipe: str, variant: str, work: Path, data_cache: Path) -> dict[str, Any]:
    if variant == "both":  # starts from an empty cache; "both, reused" then finds its rows
        shutil.rmtree(data_cache / "encoded", ignore_errors=True)
    overrides = [
        f"data.cache_dir={data_cache}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
        f"tracking.artifact_location={work / 'artifacts'}",
        *RECIPE_OVERRIDES.get(recipe, []),
        *VARIANTS[variant],
    ]
    timer = EpochTimer()
    started = time.perf_counter()
    result = train(
        load_recipe(recipe, overrides),
        work / recipe / variant.replace(", ", "-"),
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
    args = parser.parse_args()
    chosen = args.variant or DEFAULT_VARIANTS
    work = args.out or Path(tempfile.mkdtemp(prefix="training-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}; work folder {work}"
    )
    print(
        "| recipe | variant | epochs | s/epoch (2nd on) | speed-up | 1st epoch s | speed-up "
        "| train() s | speed-up | test acc |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for recipe in args.recipes:
        data_cache = work / "data" / recipe
        train(  # prepares the data once, untimed: every variant then starts from the same cache
            load_recipe(
                recipe,
                [
                    f"data.cache_dir={data_cache}",
                    f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
                    "trainer.max_epochs=1",
                    "trainer.limit_train_batches=1",
                    "trainer.limit_val_batches=1",
                    "trainer.encoded_cache_gb=0",
                ],
            ),
            work / recipe / "warm-up",
            progress=False,
            force=True,
        )
        convolutional = load_recipe(recipe).config.modality != "text"
        before: dict[str, Any] | None = None
        for variant in (name for name in VARIANTS if name in chosen):
            if not convolutional and variant in ("channels_last", "both"):
                continue  # the same as `before` / `cache` for a network without convolutions
            row = run_variant(recipe, variant, work, data_cache)
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
