"""A bundle's recipe, put back to work: its data prepared again, its MLflow run, and the recipe
itself trained again.

`mlfactory evaluate` and `mlfactory profile` run on a finished bundle; the recipe stored in its
`bundle.json` names the data it was trained on and the MLflow store of its run. `mlfactory
train TARGET` composes that recipe again, with new overrides (`stored_recipe_file`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlfactory.bundle import Bundle
from mlfactory.errors import BundleError, ConfigError, DataError, MlfactoryError
from mlfactory.mlflow_store import shown_url
from mlfactory.output import phase_log

# What `recipe_dataset` sets in the recipe's data section for another source: every item of it.
OTHER_SOURCE = {"max_per_class": None, "min_per_class": None}

if TYPE_CHECKING:
    from mlfactory.config.loader import Recipe
    from mlfactory.data.dataset import Item, PreparedDataset
    from mlfactory.tracking import TrackedRun


SCHEME_LIKE = re.compile(r"^[A-Za-z][\w.+-]+:")


def check_data_option(data: str) -> None:
    """Refuse `--data` naming a local path that does not exist, in words of `--data` (preparing
    it would say to set `data.source`, which the user did not set).

    Raises:
        DataError: no such file or folder.
    """
    from mlfactory.data.sources import SCHEME_EXAMPLES

    if SCHEME_LIKE.match(data) or Path(data).expanduser().exists():
        return
    raise DataError(
        f"--data '{data}' does not exist: give --data an existing folder with one sub-folder "
        f"per class, a .csv/.tsv/.jsonl file, or one of {SCHEME_EXAMPLES}"
    )


def recipe_dataset(
    bundle: Bundle, source: str | None = None, some_labels: bool = False
) -> tuple[Recipe, PreparedDataset]:
    """The recipe stored in the bundle and its data, prepared again (from the cache when it is
    unchanged).

    Args:
        bundle: the bundle.
        source: another data source to prepare with the recipe (its `data.source`), all of
            its items: the recipe's class limits (`data.max_per_class`, `data.min_per_class`)
            chose what the bundle trained on, not what another source may hold.
        some_labels: `source` may hold some of the bundle's labels only (a week of labelled
            traffic that saw no item of a class), not others.

    Raises:
        BundleError: the bundle stores no recipe, or the data's labels are not the bundle's
            (with `some_labels`: it has a label the bundle does not).
        ConfigError: the stored recipe is not a valid recipe.
    """
    from mlfactory.config.loader import load_recipe_from_dict
    from mlfactory.data.prepare import prepare_dataset

    if not bundle.meta.config:
        raise BundleError(
            f"the bundle {bundle.path} stores no recipe (its bundle.json has no config), so its "
            "data cannot be prepared again: use a bundle that mlfactory train made"
        )
    if source is not None:
        check_data_option(source)
    resolved = copy.deepcopy(bundle.meta.config)
    data = resolved.get("data", {})
    if source is not None and isinstance(data, dict):  # else not a recipe: loading says so
        # how to read it (columns, cache) stays; which of its items to take is not the recipe's
        resolved["data"] = {**data, **OTHER_SOURCE, "source": source}
    try:
        recipe = load_recipe_from_dict(resolved)
    except ConfigError as exc:
        raise ConfigError(f"the bundle {bundle.path}: {exc}") from None
    scored_only = some_labels and source is not None  # not trained on: one class will do
    dataset = prepare_dataset(recipe.config, min_classes=1 if scored_only else 2)
    if some_labels and source is not None and set(dataset.labels) <= set(bundle.meta.labels):
        return recipe, dataset
    if dataset.labels != bundle.meta.labels:
        data = "the recipe's data now has" if source is None else f"{source} has"
        raise BundleError(f"{data} labels {dataset.labels}, the bundle {bundle.meta.labels}")
    return recipe, dataset


def untrained_items(
    items: list[Item], bundles: list[Bundle]
) -> tuple[list[Item], list[tuple[Bundle, MlfactoryError]]]:
    """`items` without those any of `bundles` trained on (their recipe's training split,
    prepared again, from the cache when unchanged; matched by content), and the bundles whose
    data could not be prepared to tell, with why: their items are kept."""
    from mlfactory.errors import DataError

    seen: set[str] = set()
    unknown: list[tuple[Bundle, MlfactoryError]] = []
    for bundle in bundles:
        try:
            _, dataset = recipe_dataset(bundle)
        except (DataError, BundleError, ConfigError) as exc:
            unknown.append((bundle, exc))
            continue
        seen |= {item.key for item in dataset.split("train")}
    return [item for item in items if item.key not in seen], unknown


def bundle_run(bundle: Bundle, recipe: Recipe, into_bundle: bool = True) -> TrackedRun | None:
    """The bundle's MLflow run: for a bundle `resolve_bundle` fetched into a temporary folder
    (a run id, a `models:/` URI), the run in the store it was fetched from; else the run the
    bundle names, in the store its recipe names. None (with a warning) when the bundle has none
    or the store does not hold it.

    Args:
        into_bundle: the caller writes its results into `bundle`: a fetched bundle is removed
            when the command ends, so without its run nothing would keep them.

    Raises:
        BundleError: `into_bundle`, the bundle was fetched, and its run cannot be written to.
    """
    from mlfactory.targets import fetched_from
    from mlfactory.tracking import TrackedRun

    config, run_id = recipe.config.tracking, bundle.meta.mlflow_run_id
    origin = fetched_from(bundle)
    if origin is not None:
        config = dataclasses.replace(config, tracking_uri=origin[0])
        run_id = origin[1] or run_id
    run = TrackedRun.find(config, run_id) if run_id else None
    if run is not None:
        return run
    if origin is not None and into_bundle:
        what = f"MLflow run {run_id}" if run_id else "a bundle that names no MLflow run"
        raise BundleError(
            f"the bundle of {what} was fetched into a temporary folder, removed when the command "
            "ends, and cannot be logged back to its run in "
            f"{shown_url(config.tracking_uri)}: nothing would keep the results; copy it into a "
            "folder (mlfactory fetch TARGET --out FOLDER) and "
            "give that folder"
        )
    if not run_id:  # a bundle trained without MLflow: nothing to say
        return None
    hint, where = "MLFLOW_TRACKING_URI names the store", "the results are not logged to it"
    if origin is None:
        hint = "run from the folder it was trained in, or set tracking.tracking_uri"
        where = "the results are written to the bundle only"
    phase_log.warning(
        "MLflow run %s is not in %s (%s): %s", run_id, shown_url(config.tracking_uri), hint, where
    )
    return None


@contextmanager
def stored_recipe_file(target: str, schema: str) -> Iterator[Path]:
    """The recipe stored in the bundle `target` names (`targets.resolve_bundle`: a bundle or run
    folder, an MLflow run id, `models:/NAME@ALIAS`), written as a recipe file on the `schema`
    defaults in a temporary folder (removed on exit), so that it composes with overrides as any
    recipe file does. The stored recipe is the resolved one: what the recipe's file and the
    overrides of that training made of it, less its `version`.

    Raises:
        ConfigError: the target is not a bundle, or its `bundle.json` stores no recipe.
    """
    import yaml

    from mlfactory.targets import downloads_removed, resolve_bundle

    try:
        # a download, fetched for its bundle.json alone, is removed: a sweep loads it every trial
        with downloads_removed():
            bundle = resolve_bundle(target)
    except BundleError as exc:
        data = Path(target).expanduser().is_dir()  # a data folder given as the recipe, likely
        hint = (
            f"; to train on the data in it: mlfactory train image|text|audio data.source={target}"
        )
        raise ConfigError(f"recipe '{target}': {exc}{hint if data else ''}") from None
    if not bundle.meta.config:
        raise ConfigError(
            f"recipe '{target}': the bundle stores no recipe (its bundle.json has no config): "
            "train from the recipe's name or YAML file"
        )
    # a version names the bundle it was given to: the new training numbers its own (`version=`
    # sets one), or two models would log as one
    recipe = {"defaults": [schema, "_self_"], **bundle.meta.config, "version": None}
    with tempfile.TemporaryDirectory(prefix="mlfactory-recipe-") as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        yield path
