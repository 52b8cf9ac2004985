"""Two models' answers on the same labelled items, compared as a pair.

Each item is answered by both, so the comparison is paired: only the items on which exactly one
of the two is right say which is better. `compare_answers` counts them and tests whether they
split evenly with the exact McNemar test (a two-sided binomial test of the discordant items,
`scipy.stats.binomtest`). The difference in accuracy comes with a confidence interval at
1 - level, conditional on the number of discordant items: the Clopper-Pearson interval of the
share the candidate wins, scaled to the difference. It is the inversion of the same test, so it
excludes 0 exactly when the verdict is "better" or "worse". Its false-alarm rate and power on
real digits: docs/benchmarks.md ("Comparing two models").
"""

from __future__ import annotations

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
        difference_ci: its confidence interval at 1 - `level`.
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
    p_value, interval = 1.0, (difference, difference)
    if discordant:
        test = binomtest(only_candidate, discordant)
        share = test.proportion_ci(confidence_level=1 - level, method="exact")
        p_value = float(test.pvalue)
        # the candidate wins a share s of the discordant items: difference = (2s - 1) b+c / n
        interval = tuple((2 * bound - 1) * discordant / n for bound in share)
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
        difference_ci=(float(interval[0]), float(interval[1])),
        p_value=p_value,
        level=level,
        verdict=verdict,
    )
