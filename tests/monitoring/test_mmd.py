"""The MMD permutation test on real digit images: quiet on one distribution, loud on two."""

from __future__ import annotations

import numpy as np

from mlfactory.monitoring.mmd import BLOCK, mmd_test
from mlfactory.monitoring.projection import Projection


def _digits(mnist_pixels: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = mnist_pixels
    return Projection.fit(pixels[:1000], 16).transform(pixels), labels


def test_same_digits_no_drift_other_digits_drift(
    mnist_pixels: tuple[np.ndarray, np.ndarray],
) -> None:
    points, labels = _digits(mnist_pixels)
    rng = np.random.default_rng(0)
    # Random disjoint rows: the file is not in random order, so two blocks of it differ a little.
    rows = rng.permutation(np.arange(1000, len(points)))
    _, same = mmd_test(points[rows[:300]], points[rows[300:400]], rng, permutations=200)
    low, high = points[1000:][labels[1000:] < 5], points[1000:][labels[1000:] >= 5]
    statistic, shifted = mmd_test(low[:300], high[:100], rng, permutations=200)
    assert same > 0.05
    assert shifted == 1 / 201  # no permutation reached the observed statistic
    assert statistic > 0


def test_false_alarm_rate_is_at_the_level(mnist_pixels: tuple[np.ndarray, np.ndarray]) -> None:
    """100 seeded pairs of disjoint samples from the same real digits."""
    points, _ = _digits(mnist_pixels)
    pool = points[1000:]
    alarms = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        rows = rng.permutation(len(pool))
        _, p_value = mmd_test(pool[rows[:200]], pool[rows[200:260]], rng, permutations=200)
        alarms += p_value <= 0.05
    assert alarms / 100 <= 0.10  # nominal 0.05; binomial spread over 100 windows


def test_p_value_is_deterministic_for_a_seed(mnist_pixels: tuple[np.ndarray, np.ndarray]) -> None:
    points, _ = _digits(mnist_pixels)
    first = mmd_test(points[:200], points[200:250], np.random.default_rng(3), permutations=100)
    again = mmd_test(points[:200], points[200:250], np.random.default_rng(3), permutations=100)
    assert first == again


def test_permutations_beyond_one_block(mnist_pixels: tuple[np.ndarray, np.ndarray]) -> None:
    """A strict level draws thousands of permutations, scored a block at a time."""
    points, labels = _digits(mnist_pixels)
    rng = np.random.default_rng(1)
    permutations = 2 * BLOCK + 500
    rows = rng.permutation(np.arange(1000, len(points)))
    _, same = mmd_test(points[rows[:300]], points[rows[300:400]], rng, permutations)
    low, high = points[1000:][labels[1000:] < 5], points[1000:][labels[1000:] >= 5]
    _, shifted = mmd_test(low[:300], high[:100], rng, permutations)
    assert same > 0.05
    # Every block was counted: the smallest p-value is that of all permutations.
    assert shifted == 1 / (permutations + 1)
