"""`mlfactory evaluate`: re-evaluate a bundle (or a run's bundle) on its recipe's test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlfactory.bundle import META_FILE, Bundle, load_bundle
from mlfactory.errors import BundleError
from mlfactory.predictor import Predictor


def resolve_bundle(target: str) -> Bundle:
    """A bundle folder, a run folder holding `bundle/`, or an MLflow run id (artifact `bundle`)."""
    path = Path(target)
    if (path / META_FILE).is_file() or path.name == META_FILE:
        return load_bundle(path)
    if (path / "bundle" / META_FILE).is_file():
        return load_bundle(path / "bundle")
    if path.exists():
        raise BundleError(f"{target} is neither a bundle folder nor a run folder with bundle/")
    return load_bundle(_download_run_bundle(target))


def _download_run_bundle(run_id: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlfactory.config.schema import TrackingConfig

    mlflow.set_tracking_uri(TrackingConfig().tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle")
    except MlflowException as exc:
        raise BundleError(f"'{run_id}' is not a bundle path or a known MLflow run: {exc}") from None
    return Path(local)


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
