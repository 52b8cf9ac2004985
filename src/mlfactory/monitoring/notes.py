"""Lines for people under a report: when the estimated accuracy needs care, and why.

The estimate is fitted on the reference, and the benchmark measured where that holds and where
it does not (docs/monitoring.md, Accuracy). These notes say so beside the figure, where it is
read (the terminal, the JSON's `notes`, the HTML report, the UI):

- the profile predates ATC's threshold: the estimate is the mean calibrated confidence;
- the threshold rests on fewer than `MIN_ERRORS_TO_FIT` wrong reference answers (a
  near-perfect model): it moves with where those few fell;
- the reference and the test split are right at rates further apart than chance
  (`split_agreement`): the estimate starts from the reference's;
- more inputs are out of distribution than the threshold lets through by chance: nothing fitted
  on in-distribution data knows how the model fares on them;
- another check finds drift: the estimate assumes that the model is right as often at a given
  confidence as on the reference, which a shift can break.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlfactory.monitoring.accuracy import MIN_ERRORS_TO_FIT, Estimate
from mlfactory.monitoring.drift import CheckResult
from mlfactory.monitoring.profile import REWRITE, ReferenceProfile
from mlfactory.monitoring.split_agreement import disagreement

OOD_SHARE_CHECK = "ood_fraction"
# How the note on a reference that disagrees with the test split begins (`split_agreement`).
SPLITS_DISAGREE_NOTE = "the reference was "
ASK_FOR_LABELS = "feedback labels (POST /v1/feedback) give the live accuracy"


def reading_notes(
    profile: ReferenceProfile,
    checks: Sequence[CheckResult],
    estimated: Estimate,
    ood_fraction: float | None,
) -> list[str]:
    """The notes for a window's estimate (none for an empty window)."""
    if estimated.value is None:
        return []
    notes = []
    threshold = profile.accuracy
    if threshold is None:
        notes.append(
            "the estimate is the mean calibrated confidence (CBPE): the profile predates "
            f"ATC's threshold; {REWRITE}"
        )
    else:
        wrong = round(threshold.n_reference * (1.0 - threshold.reference_accuracy))
        if wrong < MIN_ERRORS_TO_FIT:
            notes.append(
                f"the estimate's threshold rests on {wrong} wrong answer"
                f"{'' if wrong == 1 else 's'} among {threshold.n_reference} reference inputs: "
                "read it beside the mean confidence"
            )
    found = disagreement(profile)
    if found is not None:
        notes.append(
            f"{SPLITS_DISAGREE_NOTE}{found.reference:.3f} right on its {found.n_reference} "
            f"validation inputs, the test split {found.test:.3f} on {found.n_test} (Fisher's "
            f"exact test, p = {found.p_value:.2g}): the estimate may read about "
            f"{found.gap:.3f} {found.reads} on traffic like the test split, and such traffic "
            "may drift more often than the level says; a larger reference steadies both: "
            "mlfactory profile BUNDLE --with-test (both splits), or --data SOURCE"
        )
    drifted = {check.name for check in checks if check.drift}
    if OOD_SHARE_CHECK in drifted and ood_fraction is not None:
        expected = profile.ood.expected_rate
        notes.append(
            f"{ood_fraction:.1%} of the inputs are out of distribution ({expected:.0%} "
            "expected): the estimate is fitted on in-distribution inputs and can be far off, "
            f"either way, for the others; {ASK_FOR_LABELS}"
        )
    elif drifted:
        notes.append(
            "drift: the estimate assumes that the model is right as often at a given confidence "
            f"as on the reference, which a shift can break; {ASK_FOR_LABELS}"
        )
    return notes
