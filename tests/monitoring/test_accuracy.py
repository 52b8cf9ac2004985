"""Temperature scaling, estimated and live accuracy on a real digits bundle's outputs."""

from __future__ import annotations

import numpy as np
from scipy import special

from mlfactory.monitoring.accuracy import (
    calibrate,
    estimated_accuracy,
    fit_temperature,
    live_accuracy,
)
from mlfactory.monitoring.profile import ReferenceProfile, label_indices
from tests.monitoring.conftest import DigitOutputs


def _nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1))))


def test_temperature_fitted_on_reference_improves_held_out_likelihood(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    reference, held_out = digit_outputs.reference, digit_outputs.held_out
    labels = digit_profile.labels
    temperature = fit_temperature(reference.probabilities, label_indices(reference.labels, labels))
    assert temperature == digit_profile.temperature
    truth = label_indices(held_out.labels, labels)
    calibrated = calibrate(held_out.probabilities, temperature)
    assert _nll(calibrated, truth) < _nll(held_out.probabilities, truth)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), held_out.probabilities.argmax(axis=1))


def test_temperature_one_changes_nothing(digit_outputs: DigitOutputs) -> None:
    probabilities = digit_outputs.held_out.probabilities.astype(np.float64)
    np.testing.assert_allclose(calibrate(probabilities, 1.0), probabilities, atol=1e-6)
    logits = np.log(probabilities)
    np.testing.assert_allclose(
        calibrate(probabilities, 2.0), special.softmax(logits / 2, axis=1), atol=1e-9
    )


def test_estimated_accuracy_on_unseen_digits_is_close_to_the_true_one(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out
    truth = label_indices(held_out.labels, digit_profile.labels)
    true_accuracy = float(np.mean(held_out.probabilities.argmax(axis=1) == truth))
    estimate = estimated_accuracy(held_out.probabilities, digit_profile.temperature)
    assert estimate.value is not None and estimate.low is not None and estimate.high is not None
    assert abs(estimate.value - true_accuracy) <= 0.06
    assert estimate.low < estimate.value < estimate.high and estimate.n == len(held_out)
    assert estimated_accuracy(held_out.probabilities[:0], 1.0).value is None


def test_live_accuracy_counts_only_labelled_rows(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out
    predicted = held_out.probabilities.argmax(axis=1)
    truth = label_indices(held_out.labels, digit_profile.labels)
    truth[::2] = -1  # half the predictions never got feedback
    live = live_accuracy(predicted, truth)
    expected = float(np.mean(predicted[1::2] == truth[1::2]))
    assert live.n == len(held_out) // 2 and live.value == expected
    assert live.low is not None and live.high is not None and live.low < expected < live.high
    assert live_accuracy(predicted, np.full(len(predicted), -1)).value is None
