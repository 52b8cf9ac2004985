"""`mlfactory evaluate`: re-evaluate a bundle (or a run's bundle) on its recipe's test split."""

from __future__ import annotations

from typing import Any

from mlfactory.errors import BundleError
from mlfactory.predictor import Predictor
from mlfactory.targets import resolve_bundle


def evaluate_target(target: str) -> dict[str, Any]:
    """Evaluate and record the metrics in bundle.json and, when reachable, the MLflow run."""
    from mlfactory.config.loader import load_recipe_from_dict
    from mlfactory.data.prepare import prepare_dataset
    from mlfactory.evaluation import record_evaluation
    from mlfactory.tracking import TrackedRun

    bundle = resolve_bundle(target)
    Predictor.from_path(bundle.path)  # a corrupt model fails here, before the data is prepared
    recipe = load_recipe_from_dict(bundle.meta.config)
    dataset = prepare_dataset(recipe.config)
    if dataset.labels != bundle.meta.labels:
        raise BundleError(
            f"the recipe's data now has labels {dataset.labels}, the bundle {bundle.meta.labels}"
        )
    run = None
    if bundle.meta.mlflow_run_id:
        run = TrackedRun.open(recipe.config.tracking, bundle.meta.mlflow_run_id)
    return record_evaluation(bundle, dataset, bundle.path.parent, run)
