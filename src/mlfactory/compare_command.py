"""`mlfactory compare BASELINE CANDIDATE`: two bundles on the same labelled items, as a pair.

Before a candidate (a retrained `challenger`) replaces a baseline (the `champion`), their test
accuracies in `bundle.json` say little: each was measured on its own recipe's test split, and a
retraining on new data has another one. This runs both bundles on the same items and compares
the answers item by item (`comparison.compare_answers`). The items are the candidate's test
split (its recipe's data, prepared again), or all items of another labelled source (`data`);
either way without the items either bundle trained on, matched by content, so neither is
scored on what it learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlfactory.bundle import Bundle
from mlfactory.bundle_recipe import recipe_dataset, untrained_items
from mlfactory.comparison import DEFAULT_LEVEL, PairedComparison, compare_answers
from mlfactory.data.dataset import Item
from mlfactory.errors import BundleError
from mlfactory.evaluation import label_indices, predicted_indices, scores
from mlfactory.output import phase_log
from mlfactory.predictor import Predictor
from mlfactory.registry import find_version, is_model_uri
from mlfactory.targets import downloads_removed, resolve_bundle
from mlfactory.tracking import without_secrets

# figures of the pair that `CompareResult.to_json` puts under "baseline", "candidate", "data"
_IN_PARTS = {"baseline_accuracy", "candidate_accuracy", "items"}


@dataclass
class CompareResult:
    """What `compare_targets` measured: on which items, each bundle's macro-F1, and the pair;
    `targets` as given and, for a registered model, the version each named (`models:/NAME/N`:
    an alias or `latest`, looked up once)."""

    baseline: Bundle
    candidate: Bundle
    source: str
    left_out: int  # items of the source that a bundle trained on
    baseline_f1: float
    candidate_f1: float
    comparison: PairedComparison
    targets: tuple[str, str] = ("", "")
    registered: tuple[str | None, str | None] = (None, None)

    def to_json(self) -> dict[str, object]:
        pair = self.comparison
        baseline = _model(self.baseline, pair.baseline_accuracy, self.baseline_f1)
        candidate = _model(self.candidate, pair.candidate_accuracy, self.candidate_f1)
        for model, target, registered in zip(
            (baseline, candidate), self.targets, self.registered, strict=True
        ):
            model |= {"target": target, "registered_version": registered}
        return {
            "baseline": baseline,
            "candidate": candidate,
            "data": {"source": self.source, "items": pair.items, "left_out": self.left_out},
            **{k: v for k, v in pair.to_json().items() if k not in _IN_PARTS},
        }


def compare_targets(
    baseline_target: str,
    candidate_target: str,
    data: str | None = None,
    level: float = DEFAULT_LEVEL,
) -> CompareResult:
    """Run both bundles on the same items and compare their answers.

    Args:
        baseline_target, candidate_target: bundle targets (`targets.resolve_bundle`).
        data: a labelled source (as `data.source` takes it), prepared with the candidate's
            recipe, holding all of the bundles' labels or some of them; default: the
            candidate's recipe's own data, its test split.
        level: the test's level for the verdict.

    Raises:
        BundleError: a bundle is not usable, the two have other labels, or no item is left.
        DataError: the data cannot be prepared.
    """
    targets = (baseline_target, candidate_target)
    with downloads_removed():  # a run id's or a models:/ URI's bundle: fetched for this only
        registered = _version_of(baseline_target), _version_of(candidate_target)
        baseline = resolve_bundle(registered[0] or baseline_target)
        candidate = resolve_bundle(registered[1] or candidate_target)
        result = _compare(baseline, candidate, data, level)
    result.targets, result.registered = targets, registered
    return result


def _version_of(target: str) -> str | None:
    """The registered version a `models:/` target names (`models:/NAME/N`), None for another
    target: fetched by its number, an alias that moves meanwhile still names what was compared."""
    return find_version(target).uri if is_model_uri(target) else None


def _compare(baseline: Bundle, candidate: Bundle, data: str | None, level: float) -> CompareResult:
    """`compare_targets` on the bundles."""
    if baseline.meta.modality != candidate.meta.modality:
        raise BundleError(
            f"the bundles are of other modalities ({_name(baseline)}: {baseline.meta.modality}, "
            f"{_name(candidate)}: {candidate.meta.modality}): compare needs two bundles of one "
            "modality"
        )
    if baseline.meta.labels != candidate.meta.labels:
        difference = _label_difference(baseline, candidate)
        raise BundleError(f"{difference}: compare needs the same labels in the same order")
    predictors = Predictor.from_path(baseline.path), Predictor.from_path(candidate.path)
    _, dataset = recipe_dataset(candidate, data, some_labels=True)
    if data is None:
        items = dataset.split("test")
        source = f"the test split of {_name(candidate)}'s data ({without_secrets(dataset.source)})"
        items, left_out = _unseen(items, [baseline])
    else:
        source = f"{without_secrets(data)} (all of its items)"
        items, left_out = _unseen(dataset.items, [baseline, candidate])
    if not items:
        raise BundleError(f"no item of {source} to compare on that neither bundle trained on")
    truth = label_indices(candidate.meta.labels, items)
    answers = [predicted_indices(predictor, items) for predictor in predictors]
    f1 = [scores(truth, answer, candidate.meta.labels)["f1_macro"] for answer in answers]
    pair = compare_answers(truth, answers[0], answers[1], level)
    return CompareResult(baseline, candidate, source, left_out, f1[0], f1[1], pair)


def _unseen(items: list[Item], bundles: list[Bundle]) -> tuple[list[Item], int]:
    """`items` without those of the bundles' training splits, and how many were left out; a
    bundle whose recipe's data cannot be prepared again is warned of, its items kept."""
    kept, unknown = untrained_items(items, bundles)
    for bundle, exc in unknown:
        phase_log.warning(
            "compare: cannot prepare the data %s trained on (%s): items it may have "
            "trained on are not left out",
            _name(bundle),
            exc,
        )
    return kept, len(items) - len(kept)


def _model(bundle: Bundle, accuracy: float, f1: float) -> dict[str, object]:
    meta = bundle.meta
    return {"name": meta.name, "version": meta.version, "accuracy": accuracy, "f1_macro": f1}


def _name(bundle: Bundle) -> str:
    return f"{bundle.meta.name} {bundle.meta.version}"


def _label_difference(baseline: Bundle, candidate: Bundle) -> str:
    """What tells the two bundles' labels apart: the labels only one has (named, up to 5 of
    each), or that they are the same labels in another order."""
    first, second = baseline.meta.labels, candidate.meta.labels
    only = [
        (bundle, [label for label in mine if label not in theirs])
        for bundle, mine, theirs in ((baseline, first, second), (candidate, second, first))
    ]
    named = [
        f"only {_name(bundle)} has {', '.join(labels[:5])}" + (", ..." if len(labels) > 5 else "")
        for bundle, labels in only
        if labels
    ]
    if not named:
        return "the bundles have the same labels in another order (the model's outputs differ)"
    return "the bundles have other labels: " + "; ".join(named)
