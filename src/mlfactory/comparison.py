"""Two models' answers on the same labelled items, compared as a pair.

Each item is answered by both, so the comparison is paired: only the items on which exactly one
of the two is right say which is better. `compare_answers` counts them and tests whether they
split evenly with the exact McNemar test (a two-sided binomial test of the discordant items,
`scipy.stats.binomtest`). The difference in accuracy comes with a confidence interval at
1 - level: Bonett and Price's adjusted Wald interval for paired proportions (one added to
each discordant count; J. Educ. Behav. Stat. 37(4), 2012), which holds its coverage where the
plain Wald interval falls short (few discordant items) and where an interval conditional on the
discordant count does (a large difference). Near the level, the test and the interval can
disagree. Their false-alarm rate, power and coverage on real digits: docs/benchmarks.md
("Comparing two models").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_LEVEL = 0.05


@dataclass(frozen=True)
class PairedComparison:
    """A baseline against a candidate on `items` items.

    Attributes:
        only_baseline_right: items the baseline answers right and the candidate wrong.
        only_candidate_right: the other way round.
        difference: candidate accuracy minus baseline accuracy.
        difference_ci: its confidence interval at 1 - `level` (`adjusted_wald_interval`).
        p_value: exact McNemar test of "both are as often right", two-sided.
        verdict: "better", "worse" (the candidate, at `level`) or "no significant difference".
    """

    items: int
    baseline_accuracy: float
    candidate_accuracy: float
    only_baseline_right: int
    only_candidate_right: int
    difference: float
    difference_ci: tuple[float, float]
    p_value: float
    level: float
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "difference_ci": list(self.difference_ci)}


def compare_answers(
    truth: np.ndarray, baseline: np.ndarray, candidate: np.ndarray, level: float = DEFAULT_LEVEL
) -> PairedComparison:
    """Compare two models' predicted label indices with the true ones (one entry per item).

    Raises:
        ValueError: no items, arrays of different lengths, or a level outside (0, 1).
    """
    from scipy.stats import binomtest

    if not 0 < level < 1:
        raise ValueError(f"level {level}: use a number between 0 and 1")
    if not len(truth) or not len(truth) == len(baseline) == len(candidate):
        raise ValueError("compare_answers needs the same number (at least 1) of each answer")
    baseline_right, candidate_right = baseline == truth, candidate == truth
    only_baseline = int(np.sum(baseline_right & ~candidate_right))
    only_candidate = int(np.sum(candidate_right & ~baseline_right))
    n = len(truth)
    discordant = only_baseline + only_candidate
    difference = (only_candidate - only_baseline) / n
    p_value = 1.0 if not discordant else float(binomtest(only_candidate, discordant).pvalue)
    verdict = "no significant difference"
    if p_value <= level:
        verdict = "better" if difference > 0 else "worse"
    return PairedComparison(
        items=n,
        baseline_accuracy=float(np.mean(baseline_right)),
        candidate_accuracy=float(np.mean(candidate_right)),
        only_baseline_right=only_baseline,
        only_candidate_right=only_candidate,
        difference=difference,
        difference_ci=adjusted_wald_interval(only_baseline, only_candidate, n, level),
        p_value=p_value,
        level=level,
        verdict=verdict,
    )


def adjusted_wald_interval(
    only_baseline: int, only_candidate: int, n: int, level: float
) -> tuple[float, float]:
    """Bonett and Price's interval at 1 - `level` for the difference in accuracy of two models
    answering the same `n` items: the Wald interval with one added to each discordant count
    and two to `n`."""
    from scipy.stats import norm

    baseline_share = (only_baseline + 1) / (n + 2)
    candidate_share = (only_candidate + 1) / (n + 2)
    center = candidate_share - baseline_share
    spread = norm.ppf(1 - level / 2) * math.sqrt(
        (baseline_share + candidate_share - center**2) / (n + 2)
    )
    return max(float(center - spread), -1.0), min(float(center + spread), 1.0)
