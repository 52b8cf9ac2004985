"""The OOD score of a real digits bundle: calibrated on digits, high on photos and corruptions."""

from __future__ import annotations

import numpy as np
from PIL import ImageOps
from sklearn.metrics import roc_auc_score

from mlfactory.monitoring.ood import OodScorer
from mlfactory.monitoring.profile import ReferenceProfile, label_indices
from tests.monitoring.conftest import DigitOutputs, Outputs


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    truth = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
    return float(roc_auc_score(truth, np.concatenate([inside, outside])))


def _scorer(outputs: DigitOutputs, labels: list[str], fpr: float) -> OodScorer:
    reference = outputs.reference
    indices = label_indices(reference.labels, labels)
    return OodScorer.fit(reference.embeddings, indices, fpr=fpr, early_features=reference.early)


def test_held_out_digits_are_flagged_at_about_the_calibrated_rate(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out  # 500 digits the scorer never saw
    assert digit_profile.ood.fpr == 0.01 and digit_profile.ood.reads_early_features
    assert np.mean(digit_profile.ood.is_ood(held_out.embeddings, held_out.early)) <= 0.03
    loose = _scorer(digit_outputs, digit_profile.labels, fpr=0.1)
    assert 0.04 <= np.mean(loose.is_ood(held_out.embeddings, held_out.early)) <= 0.17


def test_photos_and_inverted_digits_score_higher_than_max_softmax_says(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out
    inside = digit_profile.ood.score(held_out.embeddings, held_out.early)
    confidence = -held_out.probabilities.max(axis=1)
    foreign: list[Outputs] = [digit_outputs.stamps, digit_outputs.transform(ImageOps.invert)]
    loose = _scorer(digit_outputs, digit_profile.labels, fpr=0.1)
    false_flags = np.mean(loose.is_ood(held_out.embeddings, held_out.early))
    for outputs in foreign:
        auroc = _auroc(inside, digit_profile.ood.score(outputs.embeddings, outputs.early))
        baseline = _auroc(confidence, -outputs.probabilities.max(axis=1))
        assert auroc >= 0.8
        assert auroc > baseline
        # A small bundle (32 px, 600 digits): its embedding sets photos apart less than the
        # benchmark's does, yet flags them several times as often as digits.
        assert np.mean(loose.is_ood(outputs.embeddings, outputs.early)) >= 3 * false_flags


def test_a_batch_scores_as_its_rows_do(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    rows, early = digit_outputs.held_out.embeddings[:16], digit_outputs.held_out.early
    assert early is not None
    batch = digit_profile.ood.score(rows, early[:16])
    one_by_one = np.concatenate(
        [digit_profile.ood.score(rows[i : i + 1], early[i : i + 1]) for i in range(16)]
    )
    # float32 products: a batch and a single row may take different BLAS kernels; the score
    # is a difference of standardised scores near 0, so the tolerance is absolute.
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-4, atol=1e-4)
    ood = digit_profile.ood.is_ood(rows, early[:16])
    assert (ood == (batch > digit_profile.ood.threshold)).all()


def test_calibration_scores_are_of_rows_the_scorer_did_not_fit(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    scores = digit_profile.ood.calibration_scores
    assert 0.25 * 500 <= len(scores) <= 0.35 * 500
    # The threshold is their upper 1 % quantile.
    assert np.mean(scores > digit_profile.ood.threshold) <= 0.01 + 1 / len(scores)


def test_a_small_reference_gives_a_finite_threshold(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    # 8 digits a class: fewer rows within classes than directions asked for, as in a bundle
    # trained on a small folder. The directions the rows do not span are dropped, not inverted.
    reference = digit_outputs.reference
    indices = label_indices(reference.labels, digit_profile.labels)
    rows = np.concatenate([np.flatnonzero(indices == c)[:8] for c in range(10)])
    scorer = OodScorer.fit(reference.embeddings[rows], indices[rows], dims=64)
    assert scorer.projection.dims < 64
    assert np.isfinite(scorer.threshold)
    held_out = digit_outputs.held_out.embeddings
    scores = scorer.score(held_out)
    assert np.isfinite(scores).all()
    # About 24 calibration rows: the threshold is near their largest score, so the held-out rate
    # is about 1 / 25 and cannot be pinned down finer than that.
    assert np.mean(scores > scorer.threshold) <= 0.2
    inverted = scorer.score(digit_outputs.transform(ImageOps.invert).embeddings)
    assert _auroc(scores, inverted) >= 0.8
