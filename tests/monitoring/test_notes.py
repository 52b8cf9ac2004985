"""The notes under a report, on windows of a real digits bundle's traffic: when to read the
estimated accuracy with care, and silence when there is no reason to."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import ImageOps

from mlfactory.monitoring.accuracy import MIN_ERRORS_TO_FIT, ConfidenceThreshold
from mlfactory.monitoring.notes import SPLITS_DISAGREE_NOTE
from mlfactory.monitoring.profile import ReferenceProfile, label_indices
from mlfactory.monitoring.report import MonitorSettings, Window, check_window
from mlfactory.monitoring.split_agreement import TEST_SPLIT
from tests.monitoring.conftest import DigitOutputs, Outputs, reference_confidence

MODEL = {"name": "digits", "version": "1"}


def _notes(profile: ReferenceProfile, outputs: Outputs, size: int = 100) -> list[str]:
    rows = np.random.default_rng(0).choice(len(outputs), min(size, len(outputs)), replace=False)
    return check_window(profile, outputs.take(rows).window(profile), MODEL).notes


def test_unshifted_traffic_gets_no_note(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    assert digit_profile.accuracy is not None
    wrong = digit_profile.accuracy.n_reference * (1 - digit_profile.accuracy.reference_accuracy)
    assert wrong >= MIN_ERRORS_TO_FIT  # enough wrong answers to pin the threshold down
    assert _notes(digit_profile, digit_outputs.held_out) == []


def test_inputs_out_of_distribution_say_the_estimate_does_not_cover_them(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """Inverted digits: white on black no more, most of them scored out of distribution."""
    inverted = digit_outputs.transform(ImageOps.invert)
    report = check_window(
        digit_profile, inverted.take(np.arange(100)).window(digit_profile), MODEL
    ).to_json()
    assert report["ood"]["fraction"] > 0.5
    [note] = report["notes"]
    assert note.startswith(f"{report['ood']['fraction']:.1%} of the inputs are out of")
    assert "(1% expected)" in note and "POST /v1/feedback" in note


def test_drift_without_foreign_inputs_says_what_the_estimate_assumes(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """Only the digits 0 to 4: the label mix moves, the share of foreign inputs does not."""
    low = np.flatnonzero(np.isin(digit_outputs.held_out.labels, ["0", "1", "2", "3", "4"]))
    window = digit_outputs.held_out.take(low).window(digit_profile)
    report = check_window(digit_profile, window, MODEL)
    drifted = {check.name for check in report.checks if check.drift}
    assert "predicted_label" in drifted and "ood_fraction" not in drifted
    [note] = report.notes
    assert note.startswith("drift: the estimate assumes that the model is right as often")


def test_a_threshold_on_few_wrong_answers_says_so(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """A reference the model got wrong only twice, as for the near-perfect speech models."""
    confidence, correct = reference_confidence(digit_outputs, digit_profile)
    rows = np.concatenate([np.flatnonzero(correct), np.flatnonzero(~correct)[:2]])
    fragile = replace(
        digit_profile, accuracy=ConfidenceThreshold.fit(confidence[rows], correct[rows])
    )
    [note] = _notes(fragile, digit_outputs.held_out)
    assert note.startswith(f"the estimate's threshold rests on 2 wrong answers among {len(rows)}")


def test_a_profile_without_a_threshold_says_how_to_get_one(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    [note] = _notes(replace(digit_profile, accuracy=None), digit_outputs.held_out)
    assert "(CBPE)" in note and "`mlfactory profile BUNDLE`" in note


def test_an_empty_window_gets_no_note(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out
    empty = Window(held_out.embeddings[:0], held_out.probabilities[:0], [])
    report = check_window(digit_profile, empty, MODEL, MonitorSettings(min_samples=5))
    assert report.notes == []


def test_a_reference_unlike_the_test_split_says_how_the_estimate_reads(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """The profile's test-split figures those of inverted digits (right far less often than
    the reference): every report says that the estimate may read high, unshifted ones too."""
    inverted = digit_outputs.transform(ImageOps.invert)
    truth = label_indices([label or "" for label in inverted.labels], digit_profile.labels)
    accuracy = float(np.mean(inverted.probabilities.argmax(axis=1) == truth))
    assert digit_profile.accuracy is not None
    reference = digit_profile.accuracy.reference_accuracy
    assert accuracy < reference - 0.2
    figures = {"accuracy": accuracy, "n": len(inverted)}
    profile = replace(digit_profile, meta={**digit_profile.meta, TEST_SPLIT: figures})
    [note] = _notes(profile, digit_outputs.held_out)
    assert note.startswith(
        f"{SPLITS_DISAGREE_NOTE}{reference:.3f} right on its "
        f"{digit_profile.accuracy.n_reference} validation inputs, the test split {accuracy:.3f} "
        f"on {len(inverted)} (Fisher's exact test, p = "
    )
    assert f"may read about {reference - accuracy:.3f} high on traffic like the test" in note
    assert note.endswith("mlfactory profile BUNDLE --with-test (both splits), or --data SOURCE")
