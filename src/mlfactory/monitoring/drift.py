"""Drift checks: one two-sample test each, reference sample against a window of live traffic.

Every check returns a plain `CheckResult`; `correct` then adjusts the p-values of all checks of a
window together for multiple testing and sets each check's verdict. The tests:

- a numeric input-summary feature, and the confidence (the top probability): two-sample
  Kolmogorov-Smirnov (`scipy.stats.ks_2samp`; exact for small samples, conservative with ties);
- a categorical feature, and the predicted label: chi-square test of the 2 x categories table
  (`scipy.stats.chi2_contingency`); when an expected count is below 5 the p-value is exact
  Monte Carlo over tables with the same margins instead of the chi-square approximation;
- the embedding: MMD with a permutation null on the reduced embedding (`mmd.py`);
- the out-of-distribution score: one-sided Kolmogorov-Smirnov, "the window's scores are larger
  than the held-out reference scores" (inputs moving away from every class);
- the share of out-of-distribution inputs: an exact test of the number of window scores above
  the threshold (`exceedance_check`), which sees a small share of foreign inputs that moves the
  score distribution too little for the KS test.

A permutation or Monte Carlo p-value is never below 1 / (resamples + 1), and the correction
multiplies the smallest p-value by the number of checks: with 500 permutations and 11 checks,
no embedding shift however large reaches level 0.01 alone. `resamples_for` sizes both tests to
the level and the number of checks.

A check whose window has fewer than `min_samples` values says "insufficient data", and one whose
reference and window hold one and the same value (an image size every input shares) says "no
variation"; neither takes part in the verdict or counts in the multiple-testing correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mlfactory.monitoring.mmd import DEFAULT_PERMUTATIONS, mmd_test

KINDS = ("feature", "label", "confidence", "embedding")
DRIFT, NO_DRIFT, INSUFFICIENT = "drift", "no drift", "insufficient data"
NO_VARIATION = "no variation"
DEFAULT_LEVEL = 0.05
DEFAULT_MIN_SAMPLES = 30
DEFAULT_MAX_EMBEDDING_SAMPLES = 500
CORRECTIONS = ("holm", "bh")
MONTE_CARLO_TABLES = 1999
# The most permutations or Monte Carlo tables `resamples_for` asks for: levels down to about
# 2 x checks / 20,000 (0.001 with 10 checks) stay reachable.
MAX_RESAMPLES = 20_000
MIN_EXPECTED = 5.0
EXACT_KS_PRODUCT = 100_000


@dataclass
class CheckResult:
    """One drift check of one window.

    Attributes:
        name: what was compared (`brightness_mean`, `predicted_label`, `embedding`, ...).
        kind: "feature", "label", "confidence" or "embedding".
        test: the statistical test ("ks", "chi2", "chi2-exact", "mmd").
        statistic: the test statistic (KS distance, chi-square, MMD^2); None if not run.
        p_value_raw: the test's own p-value.
        p_value: the p-value adjusted for multiple testing over the window's checks.
        drift: the adjusted p-value is at or below the level.
        status: "drift", "no drift", "insufficient data" or "no variation".
        n_reference: reference values compared.
        n_window: window values compared.
        detail: one line for people (why a check did not run, what moved).
    """

    name: str
    kind: str
    test: str
    statistic: float | None = None
    p_value_raw: float | None = None
    p_value: float | None = None
    drift: bool = False
    status: str = INSUFFICIENT
    n_reference: int = 0
    n_window: int = 0
    detail: str = ""

    @property
    def tested(self) -> bool:
        return self.p_value_raw is not None

    def to_json(self) -> dict[str, Any]:
        """The check as the JSON contract shows it (plus its test, raw p-value and sizes)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_value_raw": self.p_value_raw,
            "drift": self.drift,
            "status": self.status,
            "n_reference": self.n_reference,
            "n_window": self.n_window,
            "detail": self.detail,
        }


def numeric_check(
    name: str,
    kind: str,
    reference: np.ndarray,
    window: np.ndarray,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    larger_only: bool = False,
) -> CheckResult:
    """Two-sample Kolmogorov-Smirnov test of a numeric column (NaN values are left out).

    Args:
        name: the check's name.
        kind: its kind (see `KINDS`).
        reference: the reference values.
        window: the window's values.
        min_samples: fewer values than this in either sample: "insufficient data".
        larger_only: one-sided, only "the window's values are larger" counts as drift.
    """
    ref = _finite(reference)
    win = _finite(window)
    test_name = "ks-greater" if larger_only else "ks"
    result = CheckResult(name, kind, test_name, n_reference=len(ref), n_window=len(win))
    if _too_few(result, min_samples) or _constant(result, np.concatenate([ref, win])):
        return result
    # scipy's "greater": the reference's CDF lies above the window's somewhere, i.e. the window
    # holds larger values.
    # The exact distribution for small samples; beyond, the asymptotic one (scipy's "auto" tries
    # exact up to 10,000 a side, slowly, and falls back with a warning).
    method = "exact" if len(ref) * len(win) <= EXACT_KS_PRODUCT else "asymp"
    alternative = "greater" if larger_only else "two-sided"
    test = stats.ks_2samp(ref, win, alternative=alternative, method=method)
    result.statistic, result.p_value_raw = float(test.statistic), float(test.pvalue)
    result.detail = f"median {np.median(ref):.4g} -> {np.median(win):.4g}"
    return result


def categorical_check(
    name: str,
    kind: str,
    reference: np.ndarray,
    window: np.ndarray,
    rng: np.random.Generator,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    tables: int = MONTE_CARLO_TABLES,
) -> CheckResult:
    """Chi-square test of the reference-vs-window table of category counts (`tables`: Monte
    Carlo tables when an expected count is small)."""
    result = CheckResult(name, kind, "chi2", n_reference=len(reference), n_window=len(window))
    if _too_few(result, min_samples):
        return result
    categories, codes = np.unique(np.concatenate([reference, window]), return_inverse=True)
    if _constant(result, categories):
        return result
    table = np.stack(
        [
            np.bincount(codes[: len(reference)], minlength=len(categories)),
            np.bincount(codes[len(reference) :], minlength=len(categories)),
        ]
    )
    expected = stats.contingency.expected_freq(table)
    if expected.min() < MIN_EXPECTED:
        method = stats.MonteCarloMethod(n_resamples=tables, rng=rng)
        test = stats.chi2_contingency(table, correction=False, method=method)
        result.test = "chi2-exact"
    else:
        test = stats.chi2_contingency(table, correction=False)
    result.statistic, result.p_value_raw = float(test.statistic), float(test.pvalue)
    result.detail = _largest_change(categories, table)
    return result


def exceedance_check(
    name: str,
    kind: str,
    calibration: np.ndarray,
    threshold: float,
    window: np.ndarray,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> CheckResult:
    """Are more window scores above the threshold than chance allows?

    The threshold was set from `calibration`, the scores of n held-out reference inputs. Let
    s_(k) be the largest calibration score at or below the threshold. For inputs exchangeable
    with the calibration ones, the number of m window scores above s_(k) follows a
    beta-binomial law, BetaBinomial(m, n - k + 1, k) (each is above with probability
    1 - F(s_(k)), and F(s_(k)) ~ Beta(k, n - k + 1)): an exact p-value, whatever the scores'
    distribution and however few the calibration scores, with no allowance to make for the
    threshold's own sampling error.
    """
    scores = _finite(window)
    ordered = np.sort(_finite(calibration))
    result = CheckResult(name, kind, "exceedance", n_reference=len(ordered), n_window=len(scores))
    if _too_few(result, min_samples):
        return result
    # The threshold is itself a calibration score when they are few (their largest) or its
    # rank is whole. Profiles store the scores in float32, which can round that one up past
    # the float64 threshold and move the cut down a score: compare at their precision.
    stored = np.asarray(calibration)
    at = float(stored.dtype.type(threshold)) if stored.dtype.kind == "f" else float(threshold)
    k = max(int(np.searchsorted(ordered, at, side="right")), 1)
    above = int(np.sum(scores > ordered[k - 1]))
    n = len(ordered)
    result.statistic = above / len(scores)
    result.p_value_raw = _upper_tail(above, len(scores), n - k + 1, k)
    # The cut is a calibration score, just below the threshold when few calibration scores
    # leave a gap there: the counts and the share expected are the cut's, not the threshold's.
    result.detail = (
        f"{above} of {len(scores)} above {ordered[k - 1]:.4g} (the calibration score at the "
        f"threshold); {(n - k + 1) / (n + 1):.1%} expected"
    )
    return result


def embedding_check(
    reference: np.ndarray,
    window: np.ndarray,
    rng: np.random.Generator,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    permutations: int = DEFAULT_PERMUTATIONS,
    max_samples: int = DEFAULT_MAX_EMBEDDING_SAMPLES,
) -> CheckResult:
    """MMD permutation test on the reduced embeddings; each side subsampled to `max_samples`."""
    result = CheckResult("embedding", "embedding", "mmd")
    ref, win = _sample(reference, max_samples, rng), _sample(window, max_samples, rng)
    result.n_reference, result.n_window = len(ref), len(win)
    if _too_few(result, min_samples):
        return result
    statistic, p_value = mmd_test(ref, win, rng, permutations)
    result.statistic, result.p_value_raw = statistic, p_value
    result.detail = f"{permutations} permutations, {ref.shape[1]} dimensions"
    return result


def resamples_for(level: float, checks: int, minimum: int) -> int:
    """The permutations or Monte Carlo tables a test needs for its smallest p-value,
    1 / (resamples + 1), times the number of checks to be at most half the level: `minimum`
    or more, at most `MAX_RESAMPLES`.

    Args:
        level: the verdict's false-alarm level.
        checks: the checks whose p-values are corrected together.
        minimum: the fewest to draw (the setting).
    """
    needed = math.ceil(2 * checks / level) - 1
    return int(min(max(minimum, needed), max(minimum, MAX_RESAMPLES)))


def correct(
    results: Sequence[CheckResult], level: float = DEFAULT_LEVEL, method: str = "holm"
) -> bool:
    """Adjust the p-values of the tested checks together and set each verdict.

    Holm's step-down method keeps the chance of any false alarm in the window at most `level`
    whatever the dependence between checks; "bh" (Benjamini-Hochberg, via
    `scipy.stats.false_discovery_control`) controls the false discovery rate instead.

    Returns:
        Whether any check drifted.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction '{method}': use one of {', '.join(CORRECTIONS)}")
    tested = [result for result in results if result.tested]
    if not tested:
        return False
    raw = np.array([result.p_value_raw for result in tested], dtype=np.float64)
    adjusted = _holm(raw) if method == "holm" else stats.false_discovery_control(raw)
    for result, p_value in zip(tested, adjusted, strict=True):
        result.p_value = float(p_value)
        result.drift = bool(p_value <= level)
        result.status = DRIFT if result.drift else NO_DRIFT
    return any(result.drift for result in tested)


def _upper_tail(count: int, trials: int, a: int, b: int) -> float:
    """P(X >= count) for X ~ BetaBinomial(trials, a, b). scipy's `sf` is 1 - cdf, whose digits
    cancel in a far tail (180 inputs of 180 above the largest of 50 calibration scores: 0.0 for
    a true 7.9e-52); there the tail's own probabilities are summed instead."""
    tail = float(stats.betabinom.sf(count - 1, trials, a, b))
    if tail < 1e-8:
        tail = float(stats.betabinom.pmf(np.arange(count, trials + 1), trials, a, b).sum())
    return min(tail, 1.0)


def _holm(p_values: np.ndarray) -> np.ndarray:
    order = np.argsort(p_values)
    scaled = (len(p_values) - np.arange(len(p_values))) * p_values[order]
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def _too_few(result: CheckResult, min_samples: int) -> bool:
    smaller = min(result.n_reference, result.n_window)
    if smaller >= min_samples:
        return False
    result.status = INSUFFICIENT
    side = "window" if result.n_window <= result.n_reference else "reference"
    result.detail = f"{smaller} {side} values; the test needs at least {min_samples}"
    return True


def _constant(result: CheckResult, values: np.ndarray) -> bool:
    distinct = np.unique(values)
    if len(distinct) > 1:
        return False
    result.status = NO_VARIATION
    value = distinct[0]
    shown = f"{value:.6g}" if isinstance(value, float | np.floating) else value
    result.detail = f"every value is {shown}"  # a width of 28, not 28.0
    return True


def _finite(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def _sample(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= size:
        return np.asarray(rows)
    return np.asarray(rows)[np.sort(rng.choice(len(rows), size, replace=False))]


def _largest_change(categories: np.ndarray, table: np.ndarray) -> str:
    shares = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    moved = int(np.argmax(np.abs(shares[1] - shares[0])))
    return f"{categories[moved]}: {shares[0, moved]:.1%} -> {shares[1, moved]:.1%}"
