"""Accuracy in production: live (from feedback labels) and estimated (from calibrated confidence).

The estimate needs no labels. Two methods, both from the calibrated probabilities:

- **Average thresholded confidence** (ATC; Garg et al., "Leveraging unlabeled data to predict
  out-of-distribution performance", ICLR 2022), the default: on the reference data, find the
  confidence threshold above which the share of predictions equals the reference accuracy; the
  estimate for a window is the share of its predictions above that threshold, averaged over
  thresholds fitted on 200 bootstrap resamples of the reference (the threshold rests on the
  few least confident reference inputs; one fitted threshold moves with where they fell).
  Measured on real shifts (docs/benchmarks.md), it is closer to the true accuracy than the mean
  confidence in most cases, because a network's confidence falls less than its accuracy when
  inputs move away from the training data, and counting inputs above a threshold amplifies
  what does fall.
- **Confidence-based performance estimation** (CBPE, as in NannyML): the mean calibrated
  confidence. Used for profiles written before ATC was stored.

Temperature scaling (Guo et al., 2017), fitted on data the model did not train on, is the
calibration. Both estimates hold while the inputs' relation to their labels is as in the
reference data (covariate shift); under concept shift or on unknown classes they are too high,
which the out-of-distribution fraction and the drift checks flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special, stats

# ln(T) is searched within these bounds: T from 0.05 (sharpen) to 20 (flatten).
LOG_TEMPERATURE_BOUNDS = (-3.0, 3.0)
PROBABILITY_FLOOR = 1e-12
# With fewer wrong answers than this on the reference, the temperature is not fitted (T = 1):
# the likelihood of an (almost) always-right model keeps rising as T falls, so the fit would
# sharpen every probability towards 1 and the estimate would say "100 %" whatever comes in.
MIN_ERRORS_TO_FIT = 5
DEFAULT_CONFIDENCE = 0.95
# Bootstrap resamples of the reference that ATC fits a threshold on (see ConfidenceThreshold).
RESAMPLES = 200


@dataclass(frozen=True)
class Estimate:
    """An accuracy with its confidence interval.

    Attributes:
        value: the accuracy (None when no rows count).
        low: lower end of the interval.
        high: upper end.
        n: rows it is computed from.
        method: how an estimate was made: "atc" or "cbpe" (None for live accuracy).
    """

    value: float | None
    low: float | None
    high: float | None
    n: int
    method: str | None = None


@dataclass(frozen=True)
class ConfidenceThreshold:
    """The threshold of average thresholded confidence (ATC), fitted on the reference data.

    The threshold sits where the reference's wrong answers end, so it rests on a few reference
    inputs: for a near-perfect model, on where one or two wrong answers fell. The estimate
    therefore averages over thresholds fitted on bootstrap resamples of the reference (bagging,
    Breiman 1996): the window's share above each, weighed alike.

    Attributes:
        threshold: predictions with a calibrated confidence above it count as right (fitted on
            the whole reference).
        tie_weight: the share of predictions exactly at the threshold that counts as right (a
            near-perfect model gives many confidences of exactly 1.0 in float32).
        reference_accuracy: the accuracy on the reference data the threshold reproduces.
        n_reference: the reference rows it was fitted on (the interval's second term).
        resampled: (threshold, tie_weight) fitted on each bootstrap resample of the reference;
            empty in profiles written before (the estimate then uses `threshold` alone).
    """

    threshold: float
    tie_weight: float
    reference_accuracy: float
    n_reference: int
    resampled: tuple[tuple[float, float], ...] = ()

    @classmethod
    def fit(
        cls,
        confidence: np.ndarray,
        correct: np.ndarray,
        resamples: int = RESAMPLES,
        seed: int = 0,
    ) -> ConfidenceThreshold:
        """The threshold at which the reference's share above it equals its accuracy.

        Args:
            confidence: (N,) calibrated top probabilities of the reference predictions.
            correct: (N,) whether each was right.
            resamples: bootstrap resamples of the reference to fit a threshold on each (0: the
                whole reference's threshold alone).
            seed: the resamples' seed (the same reference always gives the same thresholds).
        """
        scores = np.asarray(confidence, dtype=np.float64)
        right = np.asarray(correct, dtype=bool)
        n = len(scores)
        if n == 0:
            raise ValueError("the reference has no predictions")
        threshold, weight = _threshold(scores, right)
        rng = np.random.default_rng(seed)
        rows = (rng.integers(0, n, n) for _ in range(resamples))
        resampled = tuple(_threshold(scores[index], right[index]) for index in rows)
        return cls(threshold, weight, int(right.sum()) / n, n, resampled)

    def share(self, confidence: np.ndarray) -> float:
        """The share of `confidence` above the threshold (ties counted by `tie_weight`),
        averaged over the resampled thresholds when there are any."""
        scores = np.sort(np.asarray(confidence, dtype=np.float64))
        pairs = np.asarray(self.resampled or ((self.threshold, self.tie_weight),), np.float64)
        thresholds, weights = pairs[:, 0], pairs[:, 1]
        above = len(scores) - np.searchsorted(scores, thresholds, side="right")
        at = np.searchsorted(scores, thresholds, side="right")
        at -= np.searchsorted(scores, thresholds, side="left")
        return float(np.mean((above + weights * at) / len(scores)))

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "atc",
            "threshold": self.threshold,
            "tie_weight": self.tie_weight,
            "reference_accuracy": self.reference_accuracy,
            "n_reference": self.n_reference,
            "resampled_thresholds": [pair[0] for pair in self.resampled],
            "resampled_tie_weights": [pair[1] for pair in self.resampled],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConfidenceThreshold:
        thresholds = data.get("resampled_thresholds", [])
        weights = data.get("resampled_tie_weights", [])
        if len(thresholds) != len(weights):
            raise ValueError(
                f"profile accuracy: {len(thresholds)} resampled thresholds but "
                f"{len(weights)} tie weights"
            )
        return cls(
            float(data["threshold"]),
            float(data["tie_weight"]),
            float(data["reference_accuracy"]),
            int(data["n_reference"]),
            tuple((float(t), float(w)) for t, w in zip(thresholds, weights, strict=True)),
        )


def _threshold(scores: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """(threshold, tie weight) at which the share of `scores` above equals the share correct."""
    ordered = np.sort(scores)
    n = len(ordered)
    right = int(np.sum(correct))
    threshold = float(ordered[min(n - right, n - 1)])
    above = int(np.sum(ordered > threshold))
    at = int(np.sum(ordered == threshold))
    weight = min(max((right - above) / at, 0.0), 1.0) if at else 0.0
    return threshold, weight


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the negative log-likelihood of softmax(log(p) / T).

    Scaling the log-probabilities is the same as scaling the logits (they differ by a constant
    per row), so the bundle's probability output is enough.

    Args:
        probabilities: (N, K) the model's probabilities on data it did not train on.
        labels: (N,) the true class indices.

    Returns:
        T, or 1.0 (the raw probabilities) when the model got fewer than `MIN_ERRORS_TO_FIT` of
        the rows wrong: there is then nothing to learn its over-confidence from.
    """
    logp = _log_probabilities(probabilities)
    y = np.asarray(labels, dtype=np.int64)
    if int(np.sum(np.argmax(logp, axis=1) != y)) < MIN_ERRORS_TO_FIT:
        return 1.0

    def nll(log_t: float) -> float:
        scaled = logp / np.exp(log_t)
        return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))

    found = optimize.minimize_scalar(nll, bounds=LOG_TEMPERATURE_BOUNDS, method="bounded")
    return float(np.exp(found.x))


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the probabilities with the temperature applied."""
    return np.asarray(special.softmax(_log_probabilities(probabilities) / temperature, axis=1))


def estimated_accuracy(
    probabilities: np.ndarray,
    temperature: float,
    threshold: ConfidenceThreshold | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Estimate:
    """The expected accuracy of a window from calibrated confidence (ATC, or CBPE without one).

    With a `threshold` (ATC), the interval is normal, around the estimate, with two independent
    errors: the window's share above the threshold is a binomial proportion of its n rows, and
    the threshold reproduces an accuracy a measured on n_reference rows (a(1 - a) /
    n_reference). The share's variance is Agresti and Coull's (1998): p(1 - p) / (n + z^2) at
    p = (n * share + z^2 / 2) / (n + z^2), so that a window whose every prediction is above the
    threshold (share 1) still gets a width; the plain p(1 - p) / n gives it none. Without one
    (CBPE), it is the Poisson-binomial spread of the number of correct predictions if each is
    right with its calibrated confidence. Either covers the luck of the window and the
    reference, not a calibration that no longer holds: how often the interval holds the true
    accuracy, unshifted and shifted, is measured in docs/benchmarks.md.

    Args:
        probabilities: (N, K) the model's raw probabilities for the window.
        temperature: the profile's temperature.
        threshold: the profile's ATC threshold (None: CBPE, the mean calibrated confidence).
        confidence: the interval's coverage.
    """
    method = "cbpe" if threshold is None else "atc"
    if len(probabilities) == 0:
        return Estimate(None, None, None, 0, method)
    top = calibrate(probabilities, temperature).max(axis=1)
    n = len(top)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    if threshold is None:
        value = float(top.mean())
        spread = float(np.sqrt(np.sum(top * (1.0 - top)))) / n
    else:
        value = threshold.share(top)
        trials = n + z * z
        adjusted = (value * n + z * z / 2.0) / trials
        fitted = threshold.reference_accuracy
        variance = adjusted * (1.0 - adjusted) / trials
        variance += fitted * (1.0 - fitted) / threshold.n_reference
        spread = float(np.sqrt(variance))
    low, high = max(0.0, value - z * spread), min(1.0, value + z * spread)
    return Estimate(value, low, high, n, method)


def live_accuracy(
    predicted: np.ndarray, true: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> Estimate:
    """Accuracy over the rows that have a true label, with a Wilson interval.

    Args:
        predicted: (N,) predicted class indices.
        true: (N,) true class indices, negative where no label arrived.
        confidence: the interval's coverage.
    """
    labelled = np.asarray(true) >= 0
    n = int(labelled.sum())
    if n == 0:
        return Estimate(None, None, None, 0)
    correct = int(np.sum(np.asarray(predicted)[labelled] == np.asarray(true)[labelled]))
    interval = stats.binomtest(correct, n).proportion_ci(confidence, method="wilson")
    return Estimate(correct / n, float(interval.low), float(interval.high), n)


def _log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR, 1.0))
