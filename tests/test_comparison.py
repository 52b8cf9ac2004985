"""The paired comparison of two models' answers: its counts, the exact McNemar p-value, the
interval of the difference and the verdict. Its false-alarm rate and power on real digits are
measured by benchmarks/compare.py (docs/benchmarks.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from mlfactory.comparison import compare_answers

TRUTH = np.arange(100) % 10


def answers(wrong: list[int]) -> np.ndarray:
    """The true labels, with the items at `wrong` answered one label off."""
    out = TRUTH.copy()
    out[wrong] = (out[wrong] + 1) % 10
    return out


def test_only_the_items_one_model_gets_right_count() -> None:
    # both wrong on 0-4; only the baseline wrong on 5-14, only the candidate on 15-17
    baseline, candidate = answers(list(range(15))), answers([*range(5), 15, 16, 17])
    pair = compare_answers(TRUTH, baseline, candidate)
    assert (pair.only_baseline_right, pair.only_candidate_right) == (3, 10)
    assert (pair.baseline_accuracy, pair.candidate_accuracy) == (0.85, 0.92)
    assert pair.difference == pytest.approx(0.07)
    # two-sided exact binomial test of 10 of 13 discordant items: 2 * P(X >= 10), X ~ B(13, .5)
    tail = sum(math.comb(13, k) for k in range(10, 14)) / 2**13
    assert pair.p_value == pytest.approx(2 * tail) == pytest.approx(binomtest(10, 13).pvalue)
    assert pair.verdict == "no significant difference"  # p = 0.092
    low, high = pair.difference_ci
    assert low < 0 < high  # here the interval agrees with the test: zero is in it
    low_90, _ = compare_answers(TRUTH, baseline, candidate, level=0.1).difference_ci
    assert low_90 > 0  # and at level 0.1 both say better
    assert compare_answers(TRUTH, baseline, candidate, level=0.1).verdict == "better"
    assert compare_answers(TRUTH, candidate, baseline, level=0.1).verdict == "worse"
    swapped = compare_answers(TRUTH, candidate, baseline)
    assert swapped.difference == pytest.approx(-0.07)
    assert swapped.difference_ci == pytest.approx((-high, -low))


def test_the_same_answers_differ_in_nothing() -> None:
    same = answers([1, 2, 3])
    pair = compare_answers(TRUTH, same, same.copy())
    assert pair.p_value == 1.0 and pair.verdict == "no significant difference"
    low, high = pair.difference_ci
    assert low == pytest.approx(-high) and 0 < high < 0.03  # no discordant item of 100


def test_a_clear_difference_is_significant_and_its_interval_excludes_zero() -> None:
    pair = compare_answers(TRUTH, answers(list(range(40))), answers([]))
    assert (pair.only_baseline_right, pair.only_candidate_right) == (0, 40)
    assert pair.p_value == pytest.approx(2 * 0.5**40) and pair.verdict == "better"
    # Bonett and Price by hand: shares 1/102 and 41/102, their difference 0.392157 plus or
    # minus 1.959964 * sqrt((42/102 - 0.392157^2) / 102)
    assert pair.difference_ci == pytest.approx((0.293588, 0.490726), abs=1e-6)
    assert pair.to_json()["difference_ci"] == list(pair.difference_ci)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1])
def test_a_level_outside_zero_to_one_is_refused(level: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        compare_answers(TRUTH, TRUTH, TRUTH, level)


def test_answers_of_other_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same number"):
        compare_answers(TRUTH, TRUTH[:10], TRUTH)
    with pytest.raises(ValueError, match="same number"):
        compare_answers(TRUTH[:0], TRUTH[:0], TRUTH[:0])


@pytest.mark.parametrize("level", [0.05, 0.01])
def test_the_interval_and_the_test_agree_away_from_the_level(level: float) -> None:
    for only_baseline in range(0, 25, 3):
        for only_candidate in range(0, 25, 2):
            wrong_baseline = list(range(50, 50 + only_candidate))
            wrong_candidate = list(range(only_baseline))
            pair = compare_answers(TRUTH, answers(wrong_baseline), answers(wrong_candidate), level)
            assert (pair.only_baseline_right, pair.only_candidate_right) == (
                only_baseline,
                only_candidate,
            )
            low, high = pair.difference_ci
            assert low < pair.difference < high or pair.difference in (low, high)
            if pair.p_value < level / 5:
                assert low > 0 or high < 0, pair
            if pair.p_value > 5 * level:
                assert low < 0 < high, pair
