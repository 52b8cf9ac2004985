"""Single drift checks and the multiple-testing correction, on real digits and real summaries."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy import stats

from mlfactory.monitoring import drift
from mlfactory.monitoring.drift import CheckResult
from tests.monitoring.conftest import digit_images


def _brightness(images: list[Image.Image]) -> np.ndarray:
    return np.array([np.asarray(image, dtype=np.float64).mean() / 255 for image in images])


def test_numeric_check_sees_inverted_digits_not_other_digits() -> None:
    digits = [image for image, _ in digit_images(0, 60)]
    reference, same, inverted = (
        digits[0::3],
        digits[1::3],
        [ImageOps.invert(i) for i in digits[2::3]],
    )
    quiet = drift.numeric_check(
        "brightness_mean", "feature", _brightness(reference), _brightness(same)
    )
    loud = drift.numeric_check(
        "brightness_mean", "feature", _brightness(reference), _brightness(inverted)
    )
    assert quiet.test == "ks" and quiet.p_value_raw is not None and quiet.p_value_raw > 0.05
    assert loud.p_value_raw is not None and loud.p_value_raw < 1e-10
    assert loud.statistic == 1.0  # every inverted digit is brighter than every original


def test_one_sided_check_ignores_smaller_values() -> None:
    digits = [image for image, _ in digit_images(0, 40)]
    bright = _brightness([ImageOps.invert(i) for i in digits[0::2]])
    dark = _brightness(digits[1::2])
    towards_smaller = drift.numeric_check("score", "embedding", bright, dark, larger_only=True)
    towards_larger = drift.numeric_check("score", "embedding", dark, bright, larger_only=True)
    assert towards_smaller.p_value_raw is not None and towards_smaller.p_value_raw > 0.5
    assert towards_larger.p_value_raw is not None and towards_larger.p_value_raw < 1e-10


def test_too_few_values_is_insufficient_data_not_a_verdict() -> None:
    values = _brightness([image for image, _ in digit_images(0, 10)])
    check = drift.numeric_check("brightness_mean", "feature", values, values[:12], min_samples=30)
    assert check.status == drift.INSUFFICIENT and not check.tested
    assert "12 window values" in check.detail
    assert drift.correct([check]) is False
    assert check.p_value is None and check.drift is False


def test_a_value_every_input_shares_is_no_variation() -> None:
    widths = np.full(100, 28.0)
    numeric = drift.numeric_check("width", "feature", widths, widths[:50])
    categorical = drift.categorical_check(
        "format", "feature", np.full(100, "PNG"), np.full(50, "PNG"), np.random.default_rng(0)
    )
    for check in (numeric, categorical):
        assert check.status == drift.NO_VARIATION and not check.tested
    assert numeric.detail == "every value is 28"  # as the inputs' summaries hold it, not 28.0
    assert categorical.detail == "every value is PNG"
    rate = drift.numeric_check("rate", "feature", np.full(60, 0.1), np.full(30, 0.1))
    assert rate.detail == "every value is 0.1"


def _formats(images: list[Image.Image], kind: str) -> np.ndarray:
    found = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format=kind)
        with Image.open(io.BytesIO(buffer.getvalue())) as reopened:
            found.append(reopened.format)
    return np.array(found, dtype=np.str_)


def test_categorical_check_flags_a_new_file_format() -> None:
    digits = [image for image, _ in digit_images(0, 40)]
    reference = _formats(digits[:300], "PNG")
    mixed = np.concatenate([_formats(digits[300:340], "PNG"), _formats(digits[340:400], "JPEG")])
    check = drift.categorical_check("format", "feature", reference, mixed, np.random.default_rng(0))
    assert check.p_value_raw is not None and check.p_value_raw < 1e-6
    assert check.detail == "JPEG: 0.0% -> 60.0%"


def test_sparse_tables_get_an_exact_p_value() -> None:
    labels = np.array([label for _, label in digit_images(0, 30)], dtype=np.str_)
    window = labels[::9]  # 34 labels over 10 classes: expected counts below 5
    check = drift.categorical_check(
        "predicted_label", "label", labels, window, np.random.default_rng(0)
    )
    assert check.test == "chi2-exact"
    assert check.p_value_raw is not None and 0.05 < check.p_value_raw <= 1.0
    only_ones = np.full(40, "1")
    shifted = drift.categorical_check(
        "predicted_label", "label", labels, only_ones, np.random.default_rng(0)
    )
    assert shifted.p_value_raw is not None and shifted.p_value_raw <= 1 / (
        drift.MONTE_CARLO_TABLES + 1
    )


def test_holm_adjusts_as_by_hand() -> None:
    checks = [
        CheckResult(str(i), "feature", "ks", p_value_raw=p)
        for i, p in enumerate([0.01, 0.04, 0.03, 0.005])
    ]
    assert drift.correct(checks, level=0.05) is True
    assert [c.p_value for c in checks] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [c.drift for c in checks] == [True, False, False, True]
    assert [c.status for c in checks] == [drift.DRIFT, drift.NO_DRIFT, drift.NO_DRIFT, drift.DRIFT]


def test_benjamini_hochberg_is_scipys() -> None:
    raw = [0.01, 0.04, 0.03, 0.005]
    checks = [CheckResult(str(i), "feature", "ks", p_value_raw=p) for i, p in enumerate(raw)]
    drift.correct(checks, level=0.05, method="bh")
    assert [c.p_value for c in checks] == pytest.approx(stats.false_discovery_control(raw))
    with pytest.raises(ValueError, match="unknown correction"):
        drift.correct(checks, method="bonferroni")


def test_embedding_check_subsamples_both_sides(mnist_pixels: tuple[np.ndarray, np.ndarray]) -> None:
    pixels = mnist_pixels[0][:, ::8]
    check = drift.embedding_check(
        pixels[:1500], pixels[1500:2500], np.random.default_rng(0), max_samples=200, permutations=50
    )
    assert (check.n_reference, check.n_window) == (200, 200)
    assert check.tested and check.test == "mmd"


def test_resamples_grow_with_a_strict_level_and_many_checks() -> None:
    # The default level keeps the default counts: 2 x 11 checks / 0.05 is 440.
    assert drift.resamples_for(0.05, 11, 500) == 500
    assert drift.resamples_for(0.05, 11, drift.MONTE_CARLO_TABLES) == drift.MONTE_CARLO_TABLES
    # At 0.01 over 11 checks the smallest p-value, 1/2200, adjusts to 0.005: half the level.
    assert drift.resamples_for(0.01, 11, 500) == 2199
    assert 11 / (drift.resamples_for(0.001, 10, 500) + 1) <= 0.001
    assert drift.resamples_for(1e-6, 11, 500) == drift.MAX_RESAMPLES
    assert drift.resamples_for(1e-6, 11, 50_000) == 50_000  # a setting above the cap stands
