"""What a finished fit publishes: the best weights as a bundle, its monitoring profile, its
evaluation, and all of it in the run's MLflow run (`publish`)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger

from mlfactory import tracking
from mlfactory.bundle import Bundle, BundleMeta, load_bundle
from mlfactory.config.loader import Recipe
from mlfactory.errors import ConfigError
from mlfactory.evaluation import record_evaluation
from mlfactory.monitoring.reference import record_test_split, reference_items, write_profile
from mlfactory.output import phase_log
from mlfactory.training.export import export_bundle
from mlfactory.training.memory_format import to_memory_format
from mlfactory.training.module import ClassifierModule
from mlfactory.training.ood_graph import attach_ood_score
from mlfactory.training.report import report_results
from mlfactory.training.run_folder import BUNDLE_DIR, CHECKPOINT_DIR, PARTIAL_BUNDLE_DIR
from mlfactory.training.run_record import recipe_files
from mlfactory.training.tracking import tracked_run

if TYPE_CHECKING:
    from mlfactory.training.train import FitSetup

log = logging.getLogger(__name__)


def publish(
    recipe: Recipe,
    setup: FitSetup,
    checkpoint: ModelCheckpoint,
    logger: MLFlowLogger,
    out_dir: Path,
) -> tuple[Bundle, dict[str, Any]]:
    """Best weights -> bundle (parity-checked on the test split) -> monitoring profile (from
    the validation split) -> evaluation -> MLflow.

    The bundle's version is the recipe's `version` if set, else the run's number among the
    MLflow runs of this name (`TrackedRun.run_number`): every training run has its own.
    """
    load_best_weights(setup.module, checkpoint, out_dir / CHECKPOINT_DIR)
    # A bundle is float32 whatever the training precision: "16-true", "bf16-true" and "64-true"
    # keep the weights in their own type, and the export, its parity check and serving feed
    # float32 inputs.
    setup.module.net.float()
    check_finite_weights(setup.module.net, recipe.config.trainer.precision)
    # Exported from the usual layout: the graph is the same, and so is its parity check.
    to_memory_format(setup.module.net, torch.contiguous_format)
    config, dataset = recipe.config, setup.dataset
    run = tracked_run(logger)
    meta = BundleMeta(
        name=config.name,
        version=config.version or str(run.run_number()),
        modality=config.modality,
        labels=dataset.labels,
        preprocessing=setup.params,
        git_commit=tracking.git_commit(recipe_files(recipe)),  # dirty: an untracked recipe too
        config=tracking.without_secrets(recipe.resolved),
        data_fingerprint=dataset.fingerprint,
        mlflow_run_id=logger.run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    test_items = dataset.split("test")
    # Written beside bundle/, which it replaces once complete (its evaluation included): a run
    # stopped meanwhile leaves no half bundle.
    with removed_on_failure(out_dir / PARTIAL_BUNDLE_DIR) as partial:
        bundle = export_bundle(
            setup.module.net,
            setup.encoder,
            meta,
            partial,
            test_items,
            setup.assets,
            config.model.early_features,
        )
        phase_log.info(
            "export: bundle '%s' version %s in %s (ONNX matches PyTorch within %.1e on %d items)",
            meta.name,
            meta.version,
            out_dir / BUNDLE_DIR,
            meta.export.get("parity_max_abs_diff", 0.0),
            len(test_items),
        )
        logger.experiment.set_tag(logger.run_id, "bundle_version", meta.version)
        profile = write_profile(bundle, *reference_items(dataset))
        if profile is not None:
            attach_ood_score(bundle, test_items)
        metrics = record_evaluation(bundle, dataset, out_dir, run)
        report_results(metrics)
        record_test_split(bundle, profile, metrics)
        bundle = put_in_place(bundle.path, out_dir / BUNDLE_DIR)
    run.log_artifact(bundle.path, BUNDLE_DIR)
    logger.experiment.set_terminated(logger.run_id, "FINISHED")
    return bundle, metrics


def check_finite_weights(net: torch.nn.Module, precision: str) -> None:
    """Refuse to export a network that training left with NaN or infinite weights (a diverged
    fit): its bundle would answer NaN, and its export would fail the parity check with a
    reason that is not the real one.

    Raises:
        ConfigError: a weight is not finite; says which settings to change.
    """
    broken = [name for name, weight in net.named_parameters() if not weight.isfinite().all()]
    if not broken:
        return
    fix = "lower trainer.lr, or clip the gradients (trainer.gradient_clip_val=1.0)"
    if precision == "16-true":
        fix = (
            "trainer.precision=16-true trains in float16 without loss scaling: use 16-mixed "
            "or 32-true, or "
        ) + fix
    raise ConfigError(
        f"training diverged: {len(broken)} of the network's weight tensors hold NaN or "
        f"infinite values (the first: {broken[0]}), so no bundle was exported: {fix}"
    )


@contextmanager
def removed_on_failure(folder: Path) -> Iterator[Path]:
    """`folder`, removed when the block fails or is interrupted (Ctrl-C): a stopped run leaves
    no half-written bundle behind."""
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def put_in_place(partial: Path, final: Path) -> Bundle:
    """Rename the complete bundle `partial` to `final`, replacing the bundle there (the run's
    own, or one `run_folder.check_replaceable` found only bundle files in)."""
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(partial, final)
    return load_bundle(final)


def load_best_weights(
    module: ClassifierModule, checkpoint: ModelCheckpoint, checkpoint_dir: Path
) -> None:
    """Load the best checkpoint's weights into `module` (the last one's without a best).

    The checkpoint is looked up by name in `checkpoint_dir`: a resumed run's callback holds
    the path it had when the run started, in a folder the run may have moved from since."""
    name = checkpoint.best_model_path or checkpoint.last_model_path
    if not name:
        return
    path = checkpoint_dir / Path(name).name
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    log.info("restored best weights from %s", path)
