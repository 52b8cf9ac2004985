"""Whether the reference and the test split are right as often: a check on the reference itself.

The reference (the validation split) is one sample of the data. The estimated accuracy
reproduces its accuracy on traffic like it, so a reference that happened to be harder or easier
than the data moves the estimate by as much, and the drift checks then see unchanged traffic as
unlike it. Export records the test split's accuracy in the profile (`profile.json` ->
`test_split`) and tests the two with Fisher's exact test: at p <= `SPLITS_DISAGREE_AT` the
export's output and every report's notes say so. For two samples of the same data that happens
at most that often; how often it names a reference that is off is measured in
docs/benchmarks.md ("An unlucky reference").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy import stats

from mlfactory.monitoring.profile import VALIDATION, ReferenceProfile

SPLITS_DISAGREE_AT = 0.05
TEST_SPLIT = "test_split"  # the key of `profile.json` that holds the test split's figures


@dataclass(frozen=True)
class Disagreement:
    """The reference's and the test split's accuracies, further apart than chance allows."""

    reference: float
    n_reference: int
    test: float
    n_test: int
    p_value: float

    @property
    def reads(self) -> str:
        """How the estimate reads on traffic like the test split: "low" or "high"."""
        return "low" if self.reference < self.test else "high"

    @property
    def gap(self) -> float:
        return abs(self.test - self.reference)


def splits_p_value(reference: float, n_ref: int, accuracy: float, n_test: int) -> float:
    """Fisher's exact test, two-sided, of "right as often" for accuracy `reference` on `n_ref`
    inputs and `accuracy` on `n_test`."""
    right = round(reference * n_ref), round(accuracy * n_test)
    table = [[right[0], n_ref - right[0]], [right[1], n_test - right[1]]]
    return float(stats.fisher_exact(table).pvalue)


def test_split_figures(test: dict[str, Any]) -> dict[str, Any] | None:
    """What the profile keeps of the evaluation's test-split figures (None without any)."""
    n_test = int(test.get("split_size") or 0)
    return {"accuracy": float(test["accuracy"]), "n": n_test} if n_test else None


def disagreement(profile: ReferenceProfile) -> Disagreement | None:
    """The disagreement of the profile's reference and its bundle's test split, or None: they
    agree, the profile predates the test split's figures or ATC, or its reference holds the
    test split (not two samples)."""
    test = profile.meta.get(TEST_SPLIT)
    threshold = profile.accuracy
    if not isinstance(test, dict) or threshold is None:
        return None
    if profile.meta.get("source") != VALIDATION:
        return None
    accuracy, n_test = test.get("accuracy"), test.get("n")
    # a profile.json edited by hand: no note rather than a failed report
    if not isinstance(accuracy, int | float) or not isinstance(n_test, int):
        return None
    if not 0.0 <= accuracy <= 1.0 or n_test < 1:
        return None
    reference, n_ref = threshold.reference_accuracy, threshold.n_reference
    p_value = splits_p_value(reference, n_ref, accuracy, n_test)
    if p_value > SPLITS_DISAGREE_AT:
        return None
    return Disagreement(reference, n_ref, float(accuracy), n_test, p_value)
