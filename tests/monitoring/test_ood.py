"""The OOD score of a real digits bundle: calibrated on digits, high on photos and corruptions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps
from sklearn.metrics import roc_auc_score

from mlfactory.monitoring.drift import exceedance_check
from mlfactory.monitoring.ood import (
    CALIBRATION_FRACTION,
    FLOAT64_ABOVE,
    VARIANCE_FLOOR,
    OodScorer,
)
from mlfactory.monitoring.profile import ReferenceProfile, label_indices, load_profile
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
    # Still a score that separates (chance is 0.5): the model trained on AVX-512 kernels gave
    # 0.75 from so few rows, on AVX2 ones above 0.8.
    assert _auroc(scores, inverted) >= 0.7
    # 6 of each class's 8 are fitted (the rest calibrate): 60 rows of 10 classes span 50
    # directions; half of them keep their own variance, the rest give the residual one, which
    # is then a real variance, not the floor
    fitted = 10 * (8 - round(8 * CALIBRATION_FRACTION))
    assert scorer.projection.dims == (fitted - 10) // 2 == 25
    floor = VARIANCE_FLOOR * float(scorer.projection.variances.max())
    assert scorer.projection.residual_variance > 100 * floor


def test_a_scorer_whose_terms_float32_would_cancel_scores_in_float64(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile, tmp_path: Path
) -> None:
    """The digits' early features (48 values) have a residual variance so small that the
    expanded distance sums terms over 1,000 times an in-distribution distance: that scorer
    scores in float64, the profile says so, and the score is float32's to its rounding."""
    reference = digit_outputs.reference
    assert reference.early is not None
    indices = label_indices(reference.labels, digit_profile.labels)
    scorer = OodScorer.fit(reference.early, indices)
    width = reference.early.shape[1]
    assert scorer.distance_terms().residual > FLOAT64_ABOVE * width
    assert scorer.float64 and scorer.early is None
    wide = OodScorer.fit(reference.embeddings, indices)  # the 1,280-wide embedding: float32
    assert not wide.float64 and wide.distance_terms().residual < FLOAT64_ABOVE * 1280
    profile = replace(digit_profile, ood=scorer)
    profile.save(tmp_path)
    loaded = load_profile(tmp_path)
    assert loaded is not None and loaded.ood.float64
    assert loaded.ood.fingerprint() == scorer.fingerprint()
    held_out = digit_outputs.held_out.early
    assert held_out is not None
    exact = scorer.score(held_out)
    as_float32 = replace(scorer, float64=False).score(held_out)
    assert np.max(np.abs(as_float32 - exact) / (np.abs(exact) + 1.0)) > 1e-6  # float32 rounds
    np.testing.assert_allclose(loaded.ood.score(held_out), exact, rtol=1e-12)


def test_the_early_stage_sees_blur_and_noise_the_embedding_misses(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """Real digits blurred, and with pixel noise: the two-part score of the profile separates
    them from held-out digits better than the embedding's scorer alone does."""
    reference, held_out = digit_outputs.reference, digit_outputs.held_out
    alone = OodScorer.fit(
        reference.embeddings, label_indices(reference.labels, digit_profile.labels)
    )
    both = digit_profile.ood
    assert both.reads_early_features and not alone.reads_early_features
    rng = np.random.default_rng(0)

    def noisy(image: Image.Image) -> Image.Image:
        pixels = np.asarray(image, np.float64) + rng.normal(0.0, 40.0, image.size[::-1])
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")

    for edit in (lambda image: image.filter(ImageFilter.GaussianBlur(1.5)), noisy):
        shifted = digit_outputs.transform(edit)
        with_early = _auroc(
            both.score(held_out.embeddings, held_out.early),
            both.score(shifted.embeddings, shifted.early),
        )
        embedding_only = _auroc(alone.score(held_out.embeddings), alone.score(shifted.embeddings))
        assert with_early > embedding_only + 0.02, (with_early, embedding_only)
    with pytest.raises(ValueError, match="early_features"):
        both.score(held_out.embeddings)


def test_too_few_calibration_scores_expect_the_rate_of_their_largest(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """With fewer than 1 / fpr calibration scores the threshold is their largest, which a new
    in-distribution input exceeds with probability 1 / (n + 1), not fpr: that is the rate the
    monitor expects, as its exceedance check does."""
    reference = digit_outputs.reference
    indices = label_indices(reference.labels, digit_profile.labels)
    rows = np.concatenate([np.flatnonzero(indices == c)[:16] for c in range(10)])
    scorer = OodScorer.fit(reference.embeddings[rows], indices[rows], fpr=0.01)
    n = len(scorer.calibration_scores)
    assert n < 99 and scorer.threshold == pytest.approx(float(scorer.calibration_scores.max()))
    assert scorer.expected_rate == pytest.approx(1 / (n + 1))
    held_out = scorer.score(digit_outputs.held_out.embeddings)
    check = exceedance_check(
        "ood_fraction", "embedding", scorer.calibration_scores, scorer.threshold, held_out
    )
    assert check.detail.endswith(f"; {1 / (n + 1):.1%} expected")
    # The largest of n scores leaves a rate of law Beta(1, n): P(rate <= x) = 1 - (1 - x)^n.
    low, high = scorer.rate_range(0.9)
    assert low == pytest.approx(1 - 0.95 ** (1 / n)) and high == pytest.approx(1 - 0.05 ** (1 / n))
    # without calibration scores nothing is known of the rate
    assert replace(scorer, calibration_scores=np.zeros(0, np.float32)).rate_range() == (0.0, 1.0)
    # Enough of them (the bundle's profile): the rate it was calibrated to.
    assert len(digit_profile.ood.calibration_scores) >= 99
    assert digit_profile.ood.expected_rate == digit_profile.ood.fpr == 0.01


def test_one_profiles_rate_on_held_out_digits_lies_where_the_conformal_law_says(
    digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    """Each calibration split gives another threshold, and a rate on new digits of its own:
    within the 90 % range of the split-conformal law for most splits, and that range holds the
    rate asked."""
    reference, held_out = digit_outputs.reference, digit_outputs.held_out
    indices = label_indices(reference.labels, digit_profile.labels)
    inside = 0
    for seed in range(12):
        scorer = OodScorer.fit(
            reference.embeddings, indices, fpr=0.1, seed=seed, early_features=reference.early
        )
        low, high = scorer.rate_range(0.9)
        assert low < 0.1 < high and high - low < 0.2
        rate = float(np.mean(scorer.is_ood(held_out.embeddings, held_out.early)))
        inside += low <= rate <= high
    assert inside >= 9, inside
