"""A bundle's recipe, put back to work: its data prepared again, and its MLflow run.

`mlfactory evaluate` and `mlfactory profile` run on a finished bundle; the recipe stored in its
`bundle.json` names the data it was trained on and the MLflow store of its run.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from mlfactory.bundle import Bundle
from mlfactory.errors import BundleError
from mlfactory.output import phase_log

if TYPE_CHECKING:
    from mlfactory.config.loader import Recipe
    from mlfactory.data.dataset import PreparedDataset
    from mlfactory.tracking import TrackedRun


def recipe_dataset(bundle: Bundle, source: str | None = None) -> tuple[Recipe, PreparedDataset]:
    """The recipe stored in the bundle and its data, prepared again (from the cache when it is
    unchanged).

    Args:
        bundle: the bundle.
        source: another data source to prepare with the recipe (its `data.source`).

    Raises:
        BundleError: the data's labels are not the bundle's.
    """
    from mlfactory.config.loader import load_recipe_from_dict
    from mlfactory.data.prepare import prepare_dataset

    resolved = copy.deepcopy(bundle.meta.config)
    if source is not None:
        resolved["data"]["source"] = source
    recipe = load_recipe_from_dict(resolved)
    dataset = prepare_dataset(recipe.config)
    if dataset.labels != bundle.meta.labels:
        data = "the recipe's data now has" if source is None else f"{source} has"
        raise BundleError(f"{data} labels {dataset.labels}, the bundle {bundle.meta.labels}")
    return recipe, dataset


def bundle_run(bundle: Bundle, recipe: Recipe) -> TrackedRun | None:
    """The bundle's MLflow run, in the store its recipe names; None (with a warning) when the
    bundle has none or the store does not hold it."""
    from mlfactory.tracking import TrackedRun

    run_id = bundle.meta.mlflow_run_id
    if not run_id:
        return None
    run = TrackedRun.find(recipe.config.tracking, run_id)
    if run is None:
        phase_log.warning(
            "MLflow run %s is not in %s (run from the folder it was trained in, or set "
            "tracking.tracking_uri): the results are written to the bundle only",
            run_id,
            recipe.config.tracking.tracking_uri,
        )
    return run
