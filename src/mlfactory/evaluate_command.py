"""`mlfactory evaluate`: re-evaluate a bundle (or a run's bundle) on its recipe's test split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlfactory.bundle_recipe import bundle_run, recipe_dataset
from mlfactory.predictor import Predictor
from mlfactory.targets import downloads_removed, resolve_bundle


def evaluate_target(target: str, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate and record the metrics in bundle.json and, when reachable, the MLflow run.

    Args:
        target: the bundle, run folder, run id or registered model.
        warn: called with one line when the recipe's data is not the data the bundle was
            trained on (their fingerprints differ): the metrics are of other data.
    """
    from mlfactory.evaluation import record_evaluation

    with downloads_removed():  # a run id's or a models:/ URI's bundle: fetched for this only
        bundle = resolve_bundle(target)
        Predictor.from_path(bundle.path)  # a corrupt model fails here, before the data
        recipe, dataset = recipe_dataset(bundle)
        trained = bundle.meta.data_fingerprint
        if warn is not None and trained and trained != dataset.fingerprint:
            warn(
                f"the recipe's data changed since training: it is data fingerprint "
                f"{dataset.fingerprint}, the bundle was trained on {trained}; the metrics "
                "recorded are of the changed data"
            )
        return record_evaluation(bundle, dataset, bundle.path.parent, bundle_run(bundle, recipe))
