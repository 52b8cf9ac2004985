"""Reference against window, per checked signal: the shares per bin or category that the HTML
report draws (`html_report`, the model card) next to each check's verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlfactory.monitoring.features import summary_columns
from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import Window, window_scores

BINS = 30
# Histogram range: the central 99 % of both samples, so one far value does not squash the rest.
CLIP_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Distribution:
    """Reference against window for one checked signal.

    Attributes:
        name: the check's name (`brightness_mean`, `confidence`, `predicted_label`, ...).
        edges: (B + 1,) bin edges of a numeric signal; None for a categorical one.
        categories: the categories of a categorical signal (empty for a numeric one).
        reference: the reference's share per bin or category.
        window: the window's share per bin or category.
    """

    name: str
    edges: np.ndarray | None
    categories: tuple[str, ...]
    reference: np.ndarray
    window: np.ndarray


def distributions(profile: ReferenceProfile, window: Window) -> list[Distribution]:
    """Reference and window distributions of each summary feature, label, confidence, OOD score."""
    reference = profile.drift
    columns = summary_columns(window.summaries, reference.kinds)
    result = [
        _numeric(name, values, columns.numeric[name])
        for name, values in reference.features.numeric.items()
    ]
    result += [
        _categorical(name, values, columns.categorical[name])
        for name, values in reference.features.categorical.items()
    ]
    probabilities = np.asarray(window.probabilities, dtype=np.float64).reshape(
        len(window), len(profile.labels)
    )
    labels = np.array(profile.labels, dtype=np.str_)
    predicted = labels[probabilities.argmax(axis=1)]
    result.append(_categorical("predicted_label", labels[reference.predicted], predicted))
    result.append(_numeric("confidence", reference.confidence, probabilities.max(axis=1)))
    result.append(_numeric("ood_score", profile.ood.calibration_scores, _scores(profile, window)))
    return result


def _numeric(name: str, reference: np.ndarray, window: np.ndarray) -> Distribution:
    ref = np.asarray(reference, dtype=np.float64)
    win = np.asarray(window, dtype=np.float64)
    ref, win = ref[np.isfinite(ref)], win[np.isfinite(win)]
    both = np.concatenate([ref, win])
    low, high = np.percentile(both, CLIP_PERCENTILES) if len(both) else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, BINS + 1)
    return Distribution(name, edges, (), _shares(ref, edges), _shares(win, edges))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return counts / max(len(values), 1)


def _categorical(name: str, reference: np.ndarray, window: np.ndarray) -> Distribution:
    categories, codes = np.unique(
        np.concatenate([np.asarray(reference, np.str_), np.asarray(window, np.str_)]),
        return_inverse=True,
    )
    ref = np.bincount(codes[: len(reference)], minlength=len(categories))
    win = np.bincount(codes[len(reference) :], minlength=len(categories))
    return Distribution(
        name,
        None,
        tuple(str(c) for c in categories),
        ref / max(len(reference), 1),
        win / max(len(window), 1),
    )


def _scores(profile: ReferenceProfile, window: Window) -> np.ndarray:
    scores = window_scores(profile, window)
    return np.zeros(0) if scores is None else scores[np.isfinite(scores)]
