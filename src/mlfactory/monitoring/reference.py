"""Write a bundle's reference profile: its own outputs on inputs it did not train on.

Export calls `write_profile` on the prepared dataset once the bundle exists. The reference
inputs run through the bundle exactly as the server runs them (the bundle's encoder, ONNX
Runtime, `Modality.summarize`), so a window of live traffic from the same distribution looks
like the reference. The reference is the validation split; when it has fewer than
`MIN_REFERENCE` items, the validation and test splits together (the model trained on neither);
when those are still fewer, the bundle gets no profile and serves without monitoring.
`mlfactory profile --with-test` builds it from both splits for any validation split: twice the
inputs, for a reference whose validation split is right more or less often than the data
(`split_agreement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mlfactory.bundle import Bundle
from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.errors import BundleError, InputError
from mlfactory.monitoring.profile import (
    ARRAYS_FILE,
    META_FILE,
    MIN_REFERENCE,
    VALIDATION,
    VALIDATION_AND_TEST,
    ReferenceProfile,
    build_profile,
)
from mlfactory.monitoring.split_agreement import TEST_SPLIT, disagreement, test_split_figures
from mlfactory.output import phase_log
from mlfactory.predictor import Predictor

BATCH = 64
Label = TypeVar("Label")


def reference_items(dataset: PreparedDataset, with_test: bool = False) -> tuple[list[Item], str]:
    """The items a profile is built from, and where they came from (see the module docstring;
    `with_test`: the validation and test splits, whatever the validation split's size).

    Raises:
        BundleError: `with_test` and the data has no test split (the name would be wrong).
    """
    validation, test = dataset.split("val"), dataset.split("test")
    if with_test and not test:
        raise BundleError(
            "the recipe's data has no test split (data.test_fraction=0): --with-test would add "
            "nothing to the validation split, the reference without it"
        )
    if len(validation) >= MIN_REFERENCE and not with_test:
        return validation, VALIDATION
    return validation + test, VALIDATION_AND_TEST


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


def record_test_split(
    bundle: Bundle, profile: ReferenceProfile | None, test: dict[str, Any]
) -> None:
    """Keep the evaluation's test-split accuracy in the bundle's profile, and say when it and
    the reference are right at rates further apart than chance (`split_agreement`).

    Args:
        bundle: the bundle the profile is in.
        profile: its profile (None: nothing to do).
        test: the evaluation's figures of the test split (`accuracy`, `split_size`).
    """
    figures = test_split_figures(test)
    if profile is None or figures is None:
        return
    profile.meta[TEST_SPLIT] = figures
    profile.save_meta(bundle.path)  # the arrays, and so the graph's OOD scorer, unchanged
    found = disagreement(profile)
    if found is None:
        return
    phase_log.info(
        "monitoring: the reference (%d inputs of the %s) was %.3f right and the test split "
        "(%d) %.3f, further apart than chance (Fisher's exact test, p = %.2g): the estimated "
        "accuracy may read about %.3f %s on traffic like the test split, and the drift checks "
        "may flag such traffic more often than their level; a larger reference steadies both "
        "(mlfactory profile BUNDLE --with-test, the two splits together, or --data SOURCE)",
        found.n_reference,
        VALIDATION,
        found.reference,
        found.n_test,
        found.test,
        found.p_value,
        found.gap,
        found.reads,
    )


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
