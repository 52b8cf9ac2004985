"""`mlfactory evaluate`: re-evaluate a bundle (or a run's bundle) on its recipe's test split."""

from __future__ import annotations

from typing import Any

from mlfactory.bundle_recipe import bundle_run, recipe_dataset
from mlfactory.predictor import Predictor
from mlfactory.targets import downloads_removed, resolve_bundle


def evaluate_target(target: str) -> dict[str, Any]:
    """Evaluate and record the metrics in bundle.json and, when reachable, the MLflow run."""
    from mlfactory.evaluation import record_evaluation

    with downloads_removed():  # a run id's or a models:/ URI's bundle: fetched for this only
        bundle = resolve_bundle(target)
        Predictor.from_path(bundle.path)  # a corrupt model fails here, before the data
        recipe, dataset = recipe_dataset(bundle)
        return record_evaluation(bundle, dataset, bundle.path.parent, bundle_run(bundle, recipe))
