"""`mlfactory profile`: write a bundle's monitoring profile again, without training again.

For a bundle exported before monitoring existed, or by an mlfactory whose profile lacked a part
that monitoring now uses (the ATC thresholds, the OOD score in the model's graph), or whose
profile files were lost or replaced. The profile is built as export builds it: the recipe
stored in `bundle.json` prepares its data again, the validation split runs through the bundle
(`write_profile`), and the OOD scorer is appended to `model.onnx` (`attach_ood_score`). The
bundle, rewritten in place, is logged to its MLflow run again when the run is reachable.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlfactory.bundle import Bundle
from mlfactory.errors import BundleError
from mlfactory.evaluate_command import bundle_run, recipe_dataset
from mlfactory.monitoring.profile import MIN_REFERENCE, ReferenceProfile
from mlfactory.monitoring.reference import profile_mb, write_profile
from mlfactory.predictor import Predictor
from mlfactory.targets import resolve_bundle


@dataclass
class ProfileResult:
    """What `profile_target` wrote: the bundle, its new profile and the profile's size (MB),
    and the MLflow run the bundle was logged to again (None when it was not)."""

    bundle: Bundle
    profile: ReferenceProfile
    size_mb: float
    mlflow_run_id: str | None


def profile_target(target: str) -> ProfileResult:
    """Build the bundle's profile from its recipe's data and write it into the bundle.

    Raises:
        BundleError: the bundle is not usable, its recipe's data now has other labels, or it
            has fewer than `MIN_REFERENCE` validation and test items.
    """
    from mlfactory.training.ood_graph import attach_ood_score
    from mlfactory.training.run_folder import BUNDLE_DIR

    bundle = resolve_bundle(target)
    Predictor.from_path(bundle.path)  # a corrupt model fails here, before the data is prepared
    recipe, dataset = recipe_dataset(bundle)
    profile = write_profile(bundle, dataset)
    if profile is None:
        found = len(dataset.split("val")) + len(dataset.split("test"))
        raise BundleError(
            f"the recipe's data has {found} validation and test items; a profile needs at "
            f"least {MIN_REFERENCE} inputs the model did not train on"
        )
    attach_ood_score(bundle, dataset.split("test"))
    run = bundle_run(bundle, recipe)
    if run is not None:
        run.log_artifact(bundle.path, BUNDLE_DIR)
    logged = run.run_id if run is not None else None
    return ProfileResult(bundle, profile, profile_mb(bundle.path), logged)
