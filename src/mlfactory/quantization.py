"""`mlfactory quantize`: an int8 twin of a bundle, checked on its test split before it is kept.

A convolutional network (the image and audio recipes) gets ONNX Runtime's static quantization,
QDQ format: weights int8 per output channel, activations uint8 with scales fixed by running
real inputs of the train split through the model (MinMax calibration). Static, because a CNN's
time is in its convolutions, which only get fused int8 kernels when activation scales are fixed
ahead of time. A network without convolutions (the text recipes' transformer) gets dynamic
quantization instead: its activations have outliers that fixed scales clip, so they are scaled
per batch at run time (`_dynamic`). Weights use 7 bits (`reduce_range`) either way: on CPUs
without VNNI instructions ONNX Runtime's uint8 x int8 products can saturate at 8 bits, and the
same bundle has to give the same answers on every CPU.

Kept in float: the final Softmax (probabilities keep their precision), the first `float_convs`
convolutions (quantizing the stem of a small network costs accuracy out of proportion to the
time it saves: `benchmarks/serving/quantize.py sweep`), and the OOD scorer, which is taken out
and fitted again: the int8 model's embeddings are not the float model's, so the monitoring
profile (OOD scorer, drift reference, accuracy-estimate calibration) is rebuilt from the
validation split through the int8 model, as export builds it.

The int8 bundle is evaluated on the same test split and refused when it loses more than
`max_drop` of accuracy. When the float bundle's MLflow run is reachable, the int8 bundle gets a
run of its own in the same experiment (tag `mlfactory.quantized_from`), so that it can be
registered and served by run id like any trained bundle.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlfactory.bundle import META_FILE, MODEL_FILE, OOD_SCORE, Bundle, load_bundle, write_meta
from mlfactory.bundle_recipe import bundle_run, recipe_dataset
from mlfactory.data.dataset import Item
from mlfactory.errors import BundleError, Interrupted, first_line
from mlfactory.output import phase_log
from mlfactory.predictor import Predictor
from mlfactory.targets import resolve_bundle
from mlfactory.tracking import TrackedRun

if TYPE_CHECKING:
    from mlfactory.monitoring.profile import ReferenceProfile

CALIBRATION_ITEMS = 256
CALIBRATION_BATCH = 16
FLOAT_CONVS = 3  # chosen on digits with benchmarks/serving/quantize.py sweep
MAX_DROP = 0.01
SPEED_SECONDS = 1.5


@dataclass
class QuantizeResult:
    """The int8 bundle, what it scores against the float one, and how much smaller and faster
    (in this process, batches of 16, measured side by side) it is."""

    bundle: Bundle
    float_accuracy: float
    int8_accuracy: float
    size_ratio: float  # float model bytes / int8 model bytes
    speed_ratio: float  # int8 items per second / float items per second
    mlflow_run_id: str | None


def quantize_target(
    target: str,
    out: Path,
    float_convs: int = FLOAT_CONVS,
    max_drop: float = MAX_DROP,
    force: bool = False,
) -> QuantizeResult:
    """Write the int8 twin of the bundle `target` names into `out`; see the module docstring.

    Raises:
        BundleError: `out` exists (without `force`) or is the bundle itself, the bundle is
            already int8, it cannot be quantized, or the int8 bundle loses more than `max_drop`
            of test accuracy (nothing is left in `out` then).
        DataError: the recipe's data cannot be prepared again.
        Interrupted: Ctrl-C once the int8 model is being made (`out` is left as it was; the
            message names the MLflow run marked KILLED).
    """
    source = resolve_bundle(target)
    if source.meta.export.get("quantization"):
        raise BundleError(f"{target} is already int8 ({source.meta.version})")
    _check_out(out, source.path, force)
    Predictor.from_path(source.path)  # a corrupt model fails here, before the data is prepared
    recipe, dataset = recipe_dataset(source)
    test = dataset.split("test")
    if not test:
        raise BundleError("the recipe's test split is empty: nothing to check the int8 model on")
    # Made beside `out`, tracked, and moved into place last: a failure (or Ctrl-C) leaves what
    # `--force` would have replaced as it was, and no run of it RUNNING.
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name[:64]}.{uuid.uuid4().hex[:8]}.tmp"
    run = None
    try:
        bundle = _quantize(source, work, _calibration(dataset), float_convs, (target, out))
        profile = _rebuild_monitoring(bundle, dataset)
        # Evaluated once, as it ships (with its OOD score), for the check and for its record.
        from mlfactory.evaluation import evaluate_items
        from mlfactory.monitoring.reference import record_test_split

        metrics = evaluate_items(Predictor(bundle), test)
        record_test_split(bundle, profile, metrics)
        int8, fp32 = float(metrics["accuracy"]), _float_accuracy(source, dataset)
        _check_drop(int8, fp32, max_drop, float_convs)
        run = _track(source, bundle, recipe, dataset, metrics)
        speed_ratio = _speed(bundle, test) / _speed(source, test)
        _replace(out, work)
    except BaseException as exc:  # Ctrl-C included: the run of a bundle not kept is closed
        _close(run, exc)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bundle = load_bundle(out)
    return QuantizeResult(
        bundle=bundle,
        float_accuracy=fp32,
        int8_accuracy=int8,
        size_ratio=source.model_path.stat().st_size / bundle.model_path.stat().st_size,
        speed_ratio=speed_ratio,
        mlflow_run_id=None if run is None else run.run_id,
    )


def _check_drop(int8: float, fp32: float, max_drop: float, float_convs: int) -> None:
    """Refuse an int8 model that loses more than `max_drop` of the float model's test accuracy."""
    if fp32 - int8 > max_drop:
        raise BundleError(
            f"int8 test accuracy {int8:.4f} is {fp32 - int8:.4f} below float's {fp32:.4f} "
            f"(at most --max-drop {max_drop} allowed): keep more of the first convolutions "
            f"in float (--float-convs {float_convs + 3}), allow more (--max-drop), or serve "
            "the float bundle"
        )


def _check_out(out: Path, source: Path, force: bool) -> None:
    """`out` is new, or (with `force`) a bundle or an empty folder apart from the float bundle:
    `--force` replaces a bundle, never a folder of other things (a run folder, the cwd)."""
    out_path, source_path = out.resolve(), source.resolve()
    if out_path == source_path or source_path in out_path.parents:
        raise BundleError(f"--out {out} is the float bundle's own folder: choose another")
    if out_path in source_path.parents:
        raise BundleError(f"--out {out} holds the float bundle {source}: choose another")
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise BundleError(f"--out {out} exists: choose another, or add --force to replace it")
    if out.is_symlink() or not out.is_dir():
        raise BundleError(f"--out {out} is not a folder: --force replaces a bundle folder only")
    if not (out / META_FILE).is_file() and any(out.iterdir()):
        raise BundleError(
            f"--out {out} holds files but no bundle ({META_FILE}): --force replaces a bundle "
            "only; choose another --out"
        )


def _replace(out: Path, made: Path) -> None:
    """Move the folder `made` to `out`, replacing what `out` held only once `made` is there."""
    old = made.with_suffix(".old")
    if out.exists():
        out.rename(old)
    try:
        made.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _calibration(dataset: Any) -> list[Item]:
    """Up to `CALIBRATION_ITEMS` train items, spread over the labels (the split's own order)."""
    train = dataset.split("train")
    step = max(1, len(train) // CALIBRATION_ITEMS)
    return train[::step][:CALIBRATION_ITEMS]


def _quantize(
    source: Bundle, out: Path, items: list[Item], float_convs: int, shown: tuple[str, Path]
) -> Bundle:
    """The int8 bundle, written to `out`; `shown` names the source and the output as the user
    gave them (`out` is a temporary folder, the source may be a download)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mlfactory.monitoring.profile import ARRAYS_FILE
    from mlfactory.monitoring.profile import META_FILE as PROFILE_FILE
    from mlfactory.training.ood_graph import remove_scorer

    started = time.perf_counter()
    # The float model's profile does not describe the int8 model: rebuilt afterwards.
    shutil.copytree(source.path, out, ignore=shutil.ignore_patterns(ARRAYS_FILE, PROFILE_FILE))
    with tempfile.TemporaryDirectory() as scratch:
        plain, prepared = Path(scratch) / "plain.onnx", Path(scratch) / "prepared.onnx"
        model = onnx.load(str(source.model_path))
        remove_scorer(model)  # fitted again on the int8 embeddings
        onnx.save(model, str(plain))
        quant_pre_process(str(plain), str(prepared))
        nodes = onnx.load(str(prepared)).graph.node
        convs = [node.name for node in nodes if node.op_type == "Conv"]
        if convs and float_convs >= len(convs):
            raise BundleError(
                f"--float-convs {float_convs} keeps every one of the model's {len(convs)} "
                "convolutions in float: nothing of weight would be int8; give fewer"
            )
        try:
            if convs:
                excluded = [node.name for node in nodes if node.op_type == "Softmax"]
                excluded += convs[:float_convs]
                made = _static(source, prepared, out / MODEL_FILE, items, excluded)
                made["float_convs"] = min(float_convs, len(convs))
                summary = f"{len(convs)} convolutions, {made['float_convs']} kept in float; "
                summary += f"calibrated on {len(items)} train items"
            else:
                made = _dynamic(prepared, out / MODEL_FILE)
                summary = "no convolution: weights int8, activations quantized as they come"
        except (ValueError, RuntimeError) as exc:
            raise BundleError(
                f"ONNX Runtime cannot quantize {shown[0]}: {first_line(exc)}"
            ) from None
    bundle = load_bundle(out)
    meta = bundle.meta
    meta.version = f"{source.meta.version}+int8"
    meta.outputs = [name for name in meta.outputs if name != OOD_SCORE]
    made.update(from_version=source.meta.version, seconds=round(time.perf_counter() - started, 1))
    meta.export = {
        **{k: v for k, v in meta.export.items() if not k.startswith("ood_score_in_graph")},
        "quantization": made,
    }
    write_meta(out, meta)
    phase_log.info("quantize: %s -> %s (%s)", *shown, summary)
    return load_bundle(out)


def _static(
    source: Bundle, model: Path, target: Path, items: list[Item], excluded: list[str]
) -> dict[str, Any]:
    """Convolutional networks: QDQ with activation scales calibrated on `items`."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    encoder = source.encoder()
    encoded = [encoder(item.read_bytes()) for item in items]
    quantize_static(
        str(model),
        str(target),
        _Batches(encoded),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
    )
    return {
        "method": "onnxruntime quantize_static, QDQ",
        "weights": "int8 per output channel, 7-bit range",
        "activations": "uint8, MinMax calibration",
        "calibration_items": len(items),
        "float_nodes": excluded,
    }


def _dynamic(model: Path, target: Path) -> dict[str, Any]:
    """Transformers and other networks without convolutions: their activations have outliers
    (attention, layer norms) that fixed scales clip; dynamic quantization scales each batch's
    activations as they come (measured on MiniLM `news`: static QDQ 0.96 -> 0.56 test accuracy,
    dynamic 0.96 -> 0.96)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(model), str(target), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8
    )
    return {
        "method": "onnxruntime quantize_dynamic",
        "weights": "int8 per output channel, 7-bit range",
        "activations": "uint8, scaled per batch at run time",
        "calibration_items": 0,
        "float_nodes": [],
    }


class _Batches:
    """ONNX Runtime's calibration reader: the encoded inputs in batches."""

    def __init__(self, encoded: list[dict[str, np.ndarray]]) -> None:
        from mlfactory.modalities import stack_inputs

        batches = [
            stack_inputs(encoded[i : i + CALIBRATION_BATCH])
            for i in range(0, len(encoded), CALIBRATION_BATCH)
        ]
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _float_accuracy(source: Bundle, dataset: Any) -> float:
    """The float bundle's test accuracy: as its `bundle.json` records it when that was measured
    on this very test split (the same data fingerprint), else measured now."""
    from mlfactory.evaluation import evaluate_items

    recorded = source.meta.metrics
    test = recorded.get("test", {})
    if recorded.get("data_fingerprint") == dataset.fingerprint and "accuracy" in test:
        return float(test["accuracy"])
    return float(evaluate_items(Predictor(source), dataset.split("test"))["accuracy"])


def _rebuild_monitoring(bundle: Bundle, dataset: Any) -> ReferenceProfile | None:
    """The int8 bundle's own profile (its embeddings are not the float bundle's), and its OOD
    score in its graph."""
    from mlfactory.monitoring.reference import reference_items, write_profile
    from mlfactory.training.ood_graph import attach_ood_score

    profile = write_profile(bundle, *reference_items(dataset))
    if profile is not None:
        attach_ood_score(bundle, dataset.split("test"))
    return profile


def _track(
    source: Bundle, bundle: Bundle, recipe: Any, dataset: Any, metrics: dict[str, Any]
) -> TrackedRun | None:
    """Evaluate the int8 bundle into its `bundle.json`, in a run of its own when the float
    bundle's run is reachable (the int8 bundle then names that run). The run is FINISHED with
    the bundle as its artifact, or KILLED (Ctrl-C) or FAILED when that stops halfway."""
    from mlfactory.evaluation import record_evaluation

    parent = bundle_run(source, recipe, into_bundle=False)  # the int8 bundle is `out`
    run = None
    try:
        if parent is not None:
            experiment = parent.client.get_run(parent.run_id).info.experiment_id
            tags = {
                "mlfactory.quantized_from": parent.run_id,
                "bundle_version": bundle.meta.version,
            }
            created = parent.client.create_run(experiment, run_name=bundle.meta.name, tags=tags)
            run = TrackedRun(parent.client, created.info.run_id)
            for key, value in bundle.meta.export["quantization"].items():
                if key != "float_nodes":
                    parent.client.log_param(run.run_id, f"quantization.{key}", value)
        bundle.meta.mlflow_run_id = None if run is None else run.run_id
        write_meta(bundle.path, bundle.meta)
        with tempfile.TemporaryDirectory() as scratch:  # the confusion matrix: the run only
            record_evaluation(bundle, dataset, Path(scratch), run, metrics)
        if run is not None:
            run.log_artifact(bundle.path, "bundle")
            run.client.set_terminated(run.run_id, "FINISHED")
    except BaseException as exc:
        _close(run, exc)
        raise
    return run


def _close(run: TrackedRun | None, exc: BaseException) -> None:
    """Mark the run of a bundle that was not kept KILLED (Ctrl-C) or FAILED, never RUNNING.

    Raises:
        Interrupted: `exc` is a Ctrl-C; the message names the run it marked KILLED.
    """
    stopped = isinstance(exc, KeyboardInterrupt | Interrupted)
    if run is not None:
        run.client.set_terminated(run.run_id, "KILLED" if stopped else "FAILED")
    if isinstance(exc, KeyboardInterrupt):
        marked = "" if run is None else f"; MLflow run {run.run_id} marked KILLED"
        raise Interrupted(f"interrupted{marked}; the int8 bundle was not kept") from None


def _speed(bundle: Bundle, items: list[Item]) -> float:
    """Items per second of the bundle's model on batches of 16 encoded test items."""
    predictor = Predictor(bundle)
    batch = [predictor.encode(item.read_bytes()) for item in (items * 16)[:16]]
    predictor.run(batch)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < SPEED_SECONDS:
        predictor.run(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)
