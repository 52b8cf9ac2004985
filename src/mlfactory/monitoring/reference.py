"""Write a bundle's reference profile: its own outputs on inputs it did not train on.

Export calls `write_profile` on the prepared dataset once the bundle exists. The reference
inputs run through the bundle exactly as the server runs them (the bundle's encoder, ONNX
Runtime, `Modality.summarize`), so a window of live traffic from the same distribution looks
like the reference. The reference is the validation split; when it has fewer than
`MIN_REFERENCE` items, the validation and test splits together (the model trained on neither);
when those are still fewer, the bundle gets no profile and serves without monitoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from scipy import stats

from mlfactory.bundle import Bundle
from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.errors import InputError
from mlfactory.monitoring.profile import (
    ARRAYS_FILE,
    META_FILE,
    MIN_REFERENCE,
    ReferenceProfile,
    build_profile,
)
from mlfactory.output import phase_log
from mlfactory.predictor import Predictor

BATCH = 64
Label = TypeVar("Label")
VALIDATION = "validation split"
# Fisher's exact test of "the validation and test splits are as often right": at this level or
# below, export says that the two disagree (docs/monitoring.md, Accuracy).
SPLITS_DISAGREE_AT = 0.05


def reference_items(dataset: PreparedDataset) -> tuple[list[Item], str]:
    """The items a profile is built from, and where they came from (see the module docstring)."""
    validation = dataset.split("val")
    if len(validation) >= MIN_REFERENCE:
        return validation, VALIDATION
    return validation + dataset.split("test"), "validation and test splits"


def write_profile(bundle: Bundle, items: list[Item], source: str) -> ReferenceProfile | None:
    """Build the bundle's reference profile from `items` and save it in the bundle folder.

    Args:
        bundle: the bundle.
        items: labelled inputs the model did not train on (export: `reference_items`).
        source: where they came from, for people (`profile.json` -> `source`).

    Returns:
        The profile, or None when there are too few reference items (a warning says so).
    """
    if len(items) < MIN_REFERENCE:
        phase_log.info(
            "monitoring: no profile (%d items of the %s, at least %d are needed); "
            "the bundle serves without OOD scores and drift checks",
            len(items),
            source,
            MIN_REFERENCE,
        )
        return None
    predictor = Predictor(bundle)
    embeddings, probabilities, summaries, labels, early = model_outputs(
        predictor, [item.read_bytes() for item in items], [item.label for item in items]
    )
    profile = build_profile(
        embeddings,
        probabilities,
        labels,
        summaries,
        bundle.meta.labels,
        source=source,
        early_features=early,
    )
    profile.save(bundle.path)
    phase_log.info(
        "monitoring: profile of %d inputs of the %s, %.2f MB%s",
        len(labels),
        source,
        profile_mb(bundle.path),
        _rate_note(profile),
    )
    return profile


def splits_disagree_line(profile: ReferenceProfile | None, test: dict[str, Any]) -> str | None:
    """A line for export when the reference (the validation split) and the test split are right
    at rates further apart than chance allows, or None.

    The estimated accuracy reproduces the reference's accuracy on traffic like the reference, so
    a reference that happened to be harder or easier than the data (one sample of it) moves the
    estimate by as much, and the drift checks then also see unchanged traffic as unlike it.
    Fisher's exact test of the two splits' right and wrong counts at `SPLITS_DISAGREE_AT`: for
    two samples of the same data it speaks at most that often (measured in docs/benchmarks.md).

    Args:
        profile: the bundle's profile (None: no line).
        test: the evaluation's figures of the test split (`accuracy`, `split_size`).
    """
    n_test = int(test.get("split_size") or 0)
    if profile is None or profile.accuracy is None or not n_test:
        return None
    if profile.meta.get("source") != VALIDATION:  # with the test split in it: not independent
        return None
    n_ref, reference = profile.accuracy.n_reference, profile.accuracy.reference_accuracy
    accuracy = float(test["accuracy"])
    p_value = splits_p_value(reference, n_ref, accuracy, n_test)
    if p_value > SPLITS_DISAGREE_AT:
        return None
    reads = "low" if reference < accuracy else "high"
    return (
        f"monitoring: the reference ({n_ref} inputs of the {VALIDATION}) was {reference:.3f} "
        f"right and the test split ({n_test}) {accuracy:.3f}, further apart than chance "
        f"(Fisher's exact test, p = {p_value:.2g}): the estimated accuracy may read about "
        f"{abs(accuracy - reference):.3f} {reads} on traffic like the test split, and the drift "
        "checks may flag such traffic more often than their level; a larger reference steadies "
        "both (mlfactory profile BUNDLE --data SOURCE)"
    )


def splits_p_value(reference: float, n_ref: int, accuracy: float, n_test: int) -> float:
    """Fisher's exact test, two-sided, of "right as often" for accuracy `reference` on `n_ref`
    inputs and `accuracy` on `n_test`."""
    right = round(reference * n_ref), round(accuracy * n_test)
    table = [[right[0], n_ref - right[0]], [right[1], n_test - right[1]]]
    return float(stats.fisher_exact(table).pvalue)


def _rate_note(profile: ReferenceProfile) -> str:
    """What the OOD threshold flags in distribution: on average, and where this profile's rate
    lies given how many inputs were held out to calibrate it (`OodScorer.rate_range`), with
    what would give the rate asked when too few were, or what narrows a range that reaches
    past twice that rate."""
    ood = profile.ood
    low, high = ood.rate_range()
    too_few = ood.expected_rate > ood.fpr
    asked = f", not {ood.fpr:.0%}" if too_few else ""
    needed = round(1 / ood.fpr) - 1
    if too_few:
        remedy = f": {needed} are needed for {ood.fpr:.0%} (a larger validation split)"
    elif high > 2 * ood.fpr:
        remedy = ": a larger validation split narrows it"
    else:
        remedy = ""
    return (
        f"; its OOD threshold flags {ood.expected_rate:.1%} of in-distribution inputs on average"
        f"{asked}, and with {len(ood.calibration_scores)} held out to calibrate it, this "
        f"profile's rate is within {low:.1%} to {high:.1%} (90% chance){remedy}"
    )


def model_outputs(
    predictor: Predictor, raws: Sequence[bytes], labels: Sequence[Label]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], list[Label], np.ndarray | None]:
    """Embeddings, probabilities and input summaries of `raws`, as the server computes them,
    their labels, and their early features (None when the model has none).

    Inputs the bundle's encoder refuses are left out (with their labels).
    """
    modality, params = predictor.bundle.modality, predictor.bundle.meta.preprocessing
    embeddings, probabilities, early = [], [], []
    summaries: list[dict[str, Any]] = []
    kept: list[Label] = []
    for start in range(0, len(raws), BATCH):
        encoded = []
        chunk = zip(raws[start : start + BATCH], labels[start : start + BATCH], strict=True)
        for raw, label in chunk:
            try:
                item = predictor.encode(raw)
            except InputError:
                continue
            encoded.append(item)
            summaries.append(modality.summarize(raw, item, params))
            kept.append(label)
        if encoded:
            output = predictor.run(encoded, early_features=True)
            embeddings.append(output.embeddings)
            probabilities.append(output.probabilities)
            if output.early_features is not None:
                early.append(output.early_features)
    if not kept:
        empty = np.zeros((0, 0), np.float32)
        return empty, empty, [], [], empty if predictor.has_early_features else None
    features = np.concatenate(early) if early else None
    return np.concatenate(embeddings), np.concatenate(probabilities), summaries, kept, features


def profile_mb(folder: Path) -> float:
    """The size of a bundle's profile files, in MB."""
    return sum((folder / name).stat().st_size for name in (ARRAYS_FILE, META_FILE)) / 1e6
