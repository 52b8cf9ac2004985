"""The drift checks of one window against the reference profile, before their p-values are
corrected together (`report.check_window` does that): one per input feature, the predicted
label, the confidence, the OOD score and share, and the embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlfactory.monitoring import drift
from mlfactory.monitoring.drift import CheckResult
from mlfactory.monitoring.features import summary_columns
from mlfactory.monitoring.profile import ReferenceProfile

if TYPE_CHECKING:
    from mlfactory.monitoring.report import MonitorSettings, Window


def run_checks(
    profile: ReferenceProfile, window: Window, ood_scores: np.ndarray, settings: MonitorSettings
) -> list[CheckResult]:
    """Every drift check of the window, uncorrected: features, label, confidence, embedding.

    Args:
        profile: the reference profile.
        window: the window.
        ood_scores: (N,) the window's out-of-distribution scores.
        settings: sizes and seed.
    """
    reference = profile.drift
    rng = np.random.default_rng(settings.seed)
    n = len(window)
    probabilities = np.asarray(window.probabilities, dtype=np.float64).reshape(
        n, len(profile.labels)
    )
    minimum = settings.min_samples
    # The features', then predicted_label, confidence, ood_score, ood_fraction and embedding.
    count = len(reference.features.numeric) + len(reference.features.categorical) + 5
    tables = drift.resamples_for(settings.level, count, drift.MONTE_CARLO_TABLES)
    permutations = drift.resamples_for(settings.level, count, settings.permutations)
    checks = _feature_checks(profile, window, rng, minimum, tables)
    checks += _output_checks(profile, probabilities, ood_scores, rng, minimum, tables)
    embedding = _embedding_check(profile, window, rng, settings, count, permutations)
    return [*checks, embedding]


def _feature_checks(
    profile: ReferenceProfile,
    window: Window,
    rng: np.random.Generator,
    minimum: int,
    tables: int,
) -> list[CheckResult]:
    """One check per input feature of the modality's summaries: numeric, then categorical."""
    reference = profile.drift
    columns = summary_columns(window.summaries, reference.kinds)
    checks = [
        drift.numeric_check(name, "feature", values, columns.numeric[name], minimum)
        for name, values in reference.features.numeric.items()
    ]
    checks += [
        drift.categorical_check(
            name, "feature", values, columns.categorical[name], rng, minimum, tables
        )
        for name, values in reference.features.categorical.items()
    ]
    return checks


def _output_checks(
    profile: ReferenceProfile,
    probabilities: np.ndarray,
    ood_scores: np.ndarray,
    rng: np.random.Generator,
    minimum: int,
    tables: int,
) -> list[CheckResult]:
    """The checks of the model's outputs: predicted label, confidence, OOD score and the share
    of inputs over the OOD threshold."""
    reference = profile.drift
    predicted = np.array([profile.labels[i] for i in probabilities.argmax(axis=1)], dtype=np.str_)
    reference_predicted = np.array(profile.labels, dtype=np.str_)[reference.predicted]
    return [
        drift.categorical_check(
            "predicted_label", "label", reference_predicted, predicted, rng, minimum, tables
        ),
        drift.numeric_check(
            "confidence", "confidence", reference.confidence, probabilities.max(axis=1), minimum
        ),
        drift.numeric_check(
            "ood_score",
            "embedding",
            profile.ood.calibration_scores,
            ood_scores,
            minimum,
            larger_only=True,
        ),
        drift.exceedance_check(
            "ood_fraction",
            "embedding",
            profile.ood.calibration_scores,
            profile.ood.threshold,
            ood_scores,
            minimum,
        ),
    ]


def _embedding_check(
    profile: ReferenceProfile,
    window: Window,
    rng: np.random.Generator,
    settings: MonitorSettings,
    count: int,
    permutations: int,
) -> CheckResult:
    """The MMD test of the window's embedding, whitened on the reference's principal directions
    (every direction counts alike, the small ones where subtle shifts show included)."""
    reference = profile.drift
    projection = reference.projection
    projected = (
        projection.transform(window.embeddings, whiten=True)
        if len(window)
        else np.zeros((0, projection.dims), np.float32)
    )
    embedding = drift.embedding_check(
        reference.embeddings / np.sqrt(np.maximum(projection.variances, 1e-12)),
        projected,
        rng,
        settings.min_samples,
        permutations,
        settings.max_embedding_samples,
    )
    if embedding.tested and count / (permutations + 1) > settings.level:
        embedding.detail += (
            f"; its p-value, at least 1/{permutations + 1}, cannot reach level "
            f"{settings.level:g} over {count} checks"
        )
    return embedding
