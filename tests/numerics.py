"""How closely tests compare model outputs, and why (the measurements: docs/numerics.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mlfactory.training.export import PARITY_ATOL, PARITY_RTOL


def assert_same_prediction(probabilities: np.ndarray, expected: np.ndarray) -> None:
    """One model on one input, run by two sets of fp32 kernels, agrees as the export requires.

    PyTorch and ONNX Runtime, or ONNX Runtime on a batch of one and of many, order their float32
    sums differently (and differently again on AVX2, AVX-512 and VNNI CPUs): each probability
    within the export's parity tolerance of the other, and the same top label unless the top
    two are within that tolerance of each other.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(probabilities, expected, rtol=PARITY_RTOL, atol=PARITY_ATOL)
    top, got = int(np.argmax(expected)), int(np.argmax(probabilities))
    if top != got:
        gap = expected[top] - expected[got]
        assert gap <= PARITY_ATOL * 2 + PARITY_RTOL * (expected[top] + expected[got]), (top, got)


def assert_distinct_predictions(rows: Iterable[np.ndarray]) -> None:
    """No two rows agree within the parity tolerance: a test that matches rows is checking order."""
    rows = [np.asarray(row, dtype=np.float64) for row in rows]
    for i, row in enumerate(rows):
        for other in rows[i + 1 :]:
            assert not np.allclose(row, other, rtol=PARITY_RTOL, atol=PARITY_ATOL)


def sum_to_one_tolerance(labels: int) -> float:
    """How far a float32 softmax row may sum from 1.

    Each probability carries a few float32 roundings (2**-24 each, relative) from its exp, the
    float32 sum of `labels` terms and the division: (labels + 8) roundings bound the total.
    """
    return (labels + 8) * 2.0**-24


def assert_sums_to_one(probabilities: Iterable[float], labels: int) -> None:
    total = float(np.sum(np.asarray(list(probabilities), dtype=np.float64)))
    assert abs(total - 1.0) <= sum_to_one_tolerance(labels), total


def assert_parity_recorded(export: dict[str, Any], items: int) -> None:
    """bundle.json records the export's parity check: how many items, and what it let through."""
    assert export["parity_items"] == items
    # The check passed |p_onnx - p_torch| <= atol + rtol * p_torch, and p_torch <= 1; the
    # relative figure is over p_torch > atol, where that is at most atol / p_torch + rtol.
    assert 0.0 <= export["parity_max_abs_diff"] <= PARITY_ATOL + PARITY_RTOL
    assert 0.0 <= export["parity_max_rel_diff"] <= 1.0 + PARITY_RTOL
    assert 0.0 <= export["parity_max_embedding_diff"] <= PARITY_RTOL
