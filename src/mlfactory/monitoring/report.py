"""One monitoring report: a window of live predictions against the bundle's reference profile.

`check_window` runs every drift check, corrects their p-values together, and adds the
out-of-distribution fraction and the live and estimated accuracy. The result is a plain
`DriftReport`; the CLI, the API, the Prometheus gauges and the HTML report only render it.
`DriftReport.to_json()` is the JSON contract of `mlfactory monitor --json` and
`GET /v1/monitoring/drift`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from mlfactory.monitoring import drift
from mlfactory.monitoring.accuracy import Estimate, estimated_accuracy, live_accuracy
from mlfactory.monitoring.blas import one_thread
from mlfactory.monitoring.drift import CheckResult
from mlfactory.monitoring.flagged import LISTED, FlaggedInput, most_out_of_distribution
from mlfactory.monitoring.labels import LabelRow, label_rows
from mlfactory.monitoring.mmd import DEFAULT_PERMUTATIONS
from mlfactory.monitoring.notes import reading_notes
from mlfactory.monitoring.profile import ReferenceProfile, label_indices
from mlfactory.monitoring.window_checks import run_checks

OOD_CHECKS = ("ood_score", "ood_fraction")
NO_LOGGED_SCORES = (
    "the log holds no OOD scores, and this model's score also needs its early features"
)


@dataclass
class Window:
    """A window of logged predictions, as plain arrays (oldest first).

    Attributes:
        embeddings: (N, D) the model's embeddings.
        probabilities: (N, K) its probabilities, in the bundle's label order.
        summaries: (N,) the input summaries.
        timestamps: (N,) when each prediction was made (may be empty).
        true_labels: (N,) the feedback label of each prediction, None where none arrived.
        ood_scores: (N,) the scores logged at serving time; computed here when None.
        ood_scorers: (N,) the fingerprint of the scorer that gave each logged score (None in
            rows logged before it was recorded: taken as the profile's). A score of another
            scorer (the profile was written again since) is computed again from the embedding,
            or left out when the score needs the early features, which the log does not keep.
        latency_ms: (N,) the server latency of each prediction (may be empty).
        request_ids: (N,) the request each prediction answered (may be empty).
        input_indices: (N,) each prediction's input position in its request (may be empty).
        other_models: predictions of the same name and version logged by a model of another
            MLflow run, left out of the window.
    """

    embeddings: np.ndarray
    probabilities: np.ndarray
    summaries: Sequence[Mapping[str, Any]]
    timestamps: Sequence[datetime] = ()
    true_labels: Sequence[str | None] | None = None
    ood_scores: np.ndarray | None = None
    ood_scorers: Sequence[str | None] = ()
    latency_ms: np.ndarray | None = None
    request_ids: Sequence[str] = ()
    input_indices: Sequence[int] = ()
    other_models: int = 0

    def __len__(self) -> int:
        return len(self.probabilities)


@dataclass(frozen=True)
class MonitorSettings:
    """How a window is checked.

    Attributes:
        level: the family-wise false-alarm level of the verdict.
        correction: "holm" (family-wise error) or "bh" (false discovery rate).
        min_samples: below this many values a check reports "insufficient data".
        permutations: permutations of the embedding test, at least; a strict level draws
            more (`drift.resamples_for`), so that the test can reach it.
        max_embedding_samples: reference and window rows the embedding test uses at most.
        seed: seeds the subsamples, permutations and Monte Carlo tables (reports repeat).
        flagged: the most out-of-distribution inputs the report lists, at most.
    """

    level: float = drift.DEFAULT_LEVEL
    correction: str = "holm"
    min_samples: int = drift.DEFAULT_MIN_SAMPLES
    permutations: int = DEFAULT_PERMUTATIONS
    max_embedding_samples: int = drift.DEFAULT_MAX_EMBEDDING_SAMPLES
    seed: int = 0
    flagged: int = LISTED


@dataclass
class DriftReport:
    """The result of checking one window; see `to_json` for the contract."""

    model: dict[str, str]
    n: int
    checks: list[CheckResult]
    drift: bool
    status: str
    level: float
    correction: str
    ood_fraction: float | None
    ood_threshold: float
    ood_expected: float
    estimated: Estimate
    live: Estimate
    mean_confidence: float | None = None
    reference_confidence: float | None = None
    window_from: datetime | None = None
    window_to: datetime | None = None
    notes: list[str] = field(default_factory=list)
    labels: list[LabelRow] = field(default_factory=list)
    flagged: list[FlaggedInput] = field(default_factory=list)

    def confidence_text(self) -> str:
        """` (mean confidence 0.912, 0.993 on the reference)` to read the estimate against, or
        nothing for an empty window."""
        if self.mean_confidence is None:
            return ""
        text = f" (mean confidence {self.mean_confidence:.3f}"
        if self.reference_confidence is not None:
            text += f", {self.reference_confidence:.3f} on the reference"
        return text + ")"

    def to_json(self) -> dict[str, Any]:
        """The JSON contract: model, window, drift, checks, ood, accuracy (plus settings)."""
        return {
            "model": self.model,
            "window": {
                "from": _iso(self.window_from),
                "to": _iso(self.window_to),
                "n": self.n,
            },
            "drift": self.drift,
            "status": self.status,
            "level": self.level,
            "correction": self.correction,
            "checks": [check.to_json() for check in self.checks],
            "ood": {
                "fraction": self.ood_fraction,
                "threshold": self.ood_threshold,
                "expected": self.ood_expected,
                "flagged": [item.to_json() for item in self.flagged],
            },
            "accuracy": {
                "estimated": self.estimated.value,
                "estimated_ci": [self.estimated.low, self.estimated.high],
                "estimated_method": self.estimated.method,
                "mean_confidence": self.mean_confidence,
                "reference_confidence": self.reference_confidence,
                "labelled": self.live.n,
                "live": self.live.value,
                "live_ci": [self.live.low, self.live.high],
            },
            "notes": self.notes,
            "labels": [row.to_json() for row in self.labels],
        }


def check_window(
    profile: ReferenceProfile,
    window: Window,
    model: Mapping[str, str],
    settings: MonitorSettings | None = None,
) -> DriftReport:
    """Run every check of a window against the profile.

    Args:
        profile: the bundle's reference profile.
        window: the logged predictions to check.
        model: {"name": ..., "version": ...} of the bundle.
        settings: level, correction, sizes; the defaults when None.
    """
    settings = settings or MonitorSettings()
    with one_thread():
        return _check_window(profile, window, model, settings)


def _check_window(
    profile: ReferenceProfile,
    window: Window,
    model: Mapping[str, str],
    settings: MonitorSettings,
) -> DriftReport:
    scores = window_scores(profile, window)
    checks = run_checks(profile, window, np.zeros(0) if scores is None else scores, settings)
    _note_missing_scores(checks, scores)
    any_drift = drift.correct(checks, settings.level, settings.correction)
    tested = [check for check in checks if check.tested]
    status = drift.INSUFFICIENT if not tested else drift.DRIFT if any_drift else drift.NO_DRIFT
    ood_fraction = _ood_fraction(scores, profile.ood.threshold)
    estimated = estimated_accuracy(
        np.asarray(window.probabilities), profile.temperature, profile.accuracy
    )
    true = _true_indices(window, profile.labels)
    predicted = np.asarray(window.probabilities).argmax(axis=1) if len(window) else np.array([])
    times = list(window.timestamps)
    return DriftReport(
        model=dict(model),
        n=len(window),
        checks=checks,
        drift=any_drift,
        status=status,
        level=settings.level,
        correction=settings.correction,
        ood_fraction=ood_fraction,
        ood_threshold=profile.ood.threshold,
        ood_expected=profile.ood.expected_rate,
        estimated=estimated,
        live=live_accuracy(predicted, true),
        mean_confidence=float(np.max(window.probabilities, axis=1).mean()) if len(window) else None,
        reference_confidence=_optional_float(profile.meta.get("reference_confidence")),
        window_from=min(times) if times else None,
        window_to=max(times) if times else None,
        notes=reading_notes(profile, checks, estimated, ood_fraction),
        labels=label_rows(profile.labels, profile.drift.predicted, predicted, true),
        flagged=most_out_of_distribution(
            scores,
            profile.ood.threshold,
            np.asarray(window.probabilities),
            profile.labels,
            window.request_ids,
            window.input_indices,
            times,
            window.true_labels,
            settings.flagged,
        ),
    )


def _note_missing_scores(checks: list[CheckResult], scores: np.ndarray | None) -> None:
    """Say in the OOD checks' details when the log has no scores, or some were left out."""
    logged = 0 if scores is None else len(scores)
    left_out = 0 if scores is None else int(np.sum(~np.isfinite(scores)))
    for check in checks:
        if check.name in OOD_CHECKS and scores is None:
            check.detail = NO_LOGGED_SCORES
        elif check.name in OOD_CHECKS and left_out:
            check.detail = (
                f"{left_out} of {logged} logged scores left out: another profile's scorer "
                f"gave them, and they need early features the log does not keep; {check.detail}"
            )


def _ood_fraction(scores: np.ndarray | None, threshold: float) -> float | None:
    """The share of the window's usable OOD scores over the threshold (None without any)."""
    scored = None if scores is None else scores[np.isfinite(scores)]
    return float(np.mean(scored > threshold)) if scored is not None and len(scored) else None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def window_scores(profile: ReferenceProfile, window: Window) -> np.ndarray | None:
    """The window's OOD scores: as logged, else computed from its embeddings; None when they
    were not logged and need the early features, which the log does not keep."""
    if window.ood_scores is not None:
        scores = np.array(window.ood_scores, dtype=np.float64)
        current = profile.ood.fingerprint()
        stale = np.array([s is not None and s != current for s in window.ood_scorers], bool)
        if stale.any():
            scores[stale] = (
                np.nan
                if profile.ood.reads_early_features
                else profile.ood.score(np.asarray(window.embeddings)[stale])
            )
        return scores
    if not len(window):
        return np.zeros(0)
    if profile.ood.reads_early_features:
        return None
    return np.asarray(profile.ood.score(window.embeddings), dtype=np.float64)


def _true_indices(window: Window, labels: Sequence[str]) -> np.ndarray:
    if window.true_labels is None:
        return np.full(len(window), -1, dtype=np.int64)
    values = ["" if label is None else label for label in window.true_labels]
    return label_indices(np.array(values, dtype=np.str_), labels)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
