"""Accuracy in production: live (from feedback labels) and estimated (from calibrated confidence).

Estimated accuracy follows NannyML's confidence-based performance estimation (CBPE): when the
probabilities are calibrated, a prediction made with confidence c is right with probability c,
so the expected accuracy of a window is the mean confidence. A network's raw softmax is usually
over-confident; temperature scaling (Guo et al., 2017), fitted on data the model did not train
on, is the calibration. The estimate holds while the inputs' relation to their labels is as in
the reference data (covariate shift); under concept shift or on unknown classes it is too high,
which the out-of-distribution fraction and the drift checks flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

# ln(T) is searched within these bounds: T from 0.05 (sharpen) to 20 (flatten).
LOG_TEMPERATURE_BOUNDS = (-3.0, 3.0)
PROBABILITY_FLOOR = 1e-12
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """An accuracy with its confidence interval.

    Attributes:
        value: the accuracy (None when no rows count).
        low: lower end of the interval.
        high: upper end.
        n: rows it is computed from.
    """

    value: float | None
    low: float | None
    high: float | None
    n: int


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the negative log-likelihood of softmax(log(p) / T).

    Scaling the log-probabilities is the same as scaling the logits (they differ by a constant
    per row), so the bundle's probability output is enough.

    Args:
        probabilities: (N, K) the model's probabilities on data it did not train on.
        labels: (N,) the true class indices.
    """
    logp = _log_probabilities(probabilities)
    y = np.asarray(labels, dtype=np.int64)

    def nll(log_t: float) -> float:
        scaled = logp / np.exp(log_t)
        return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))

    found = optimize.minimize_scalar(nll, bounds=LOG_TEMPERATURE_BOUNDS, method="bounded")
    return float(np.exp(found.x))


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the probabilities with the temperature applied."""
    return np.asarray(special.softmax(_log_probabilities(probabilities) / temperature, axis=1))


def estimated_accuracy(
    probabilities: np.ndarray, temperature: float, confidence: float = DEFAULT_CONFIDENCE
) -> Estimate:
    """The expected accuracy of a window from calibrated confidence (CBPE).

    The interval is the normal approximation of the Poisson-binomial spread of the number of
    correct predictions if each prediction is right with its calibrated confidence: it covers
    the luck of the window, not a calibration that no longer holds.

    Args:
        probabilities: (N, K) the model's raw probabilities for the window.
        temperature: the profile's temperature.
        confidence: the interval's coverage.
    """
    if len(probabilities) == 0:
        return Estimate(None, None, None, 0)
    top = calibrate(probabilities, temperature).max(axis=1)
    value = float(top.mean())
    spread = float(np.sqrt(np.sum(top * (1.0 - top)))) / len(top)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    return Estimate(value, max(0.0, value - z * spread), min(1.0, value + z * spread), len(top))


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
