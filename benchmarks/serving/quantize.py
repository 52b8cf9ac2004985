"""int8 bundles: ONNX Runtime static quantization (QDQ) calibrated on real inputs, and its cost.

Why static QDQ and not `quantize_dynamic`: dynamic quantization computes activation scales at run
time and in ONNX Runtime only covers MatMul/Gemm-like ops (convolutions become ConvInteger, which
the CPU provider runs slowly); a CNN's time is in its convolutions, which only get fused int8
kernels when activation scales are fixed ahead of time. So: `quantize_static`, QDQ format, a
calibration set of real images (MinMax), weights int8 per output channel, activations uint8 (ORT's
CPU default pairing). The final Softmax stays in float (probabilities keep their precision), and so
do the first `float_convs` convolutions: quantizing the stem of a small network costs accuracy out
of proportion to the time it saves (see `sweep`, which measures both for several values).

    .venv/bin/python -m benchmarks.serving.quantize resnet18 --cache runs/bench
    .venv/bin/python -m benchmarks.serving.quantize sweep --bundle runs/bench/digits/bundle \
        --cache runs/bench --float-convs 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from mlfactory.bundle import MODEL_FILE, Bundle, load_bundle, write_meta
from mlfactory.modalities import stack_inputs

CALIBRATION_BATCH = 16
CALIBRATION_ITEMS = 256
# Convolutions (in graph order) kept in float: the stem block. Chosen with `sweep` on digits.
FLOAT_CONVS = 3


class _Batches(CalibrationDataReader):
    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_bundle(
    source: Path,
    target: Path,
    calibration: list[bytes],
    float_convs: int = FLOAT_CONVS,
    **options: Any,
) -> Bundle:
    """Write `target` as the int8 (static QDQ) version of the bundle at `source`.

    Args:
        source: the fp32 bundle.
        target: the new bundle folder (replaced if it exists).
        calibration: raw inputs (e.g. image files' bytes) whose activations fix the scales.
        float_convs: how many of the first Conv nodes stay in float.
        options: `quantize_static` arguments that override the defaults here.
    """
    bundle = load_bundle(source)
    encoder = bundle.encoder()
    encoded = [encoder(raw) for raw in calibration]
    batches = [
        stack_inputs(encoded[i : i + CALIBRATION_BATCH])
        for i in range(0, len(encoded), CALIBRATION_BATCH)
    ]
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source / MODEL_FILE), str(prepared))
        nodes = onnx.load(str(prepared)).graph.node
        convs = [node.name for node in nodes if node.op_type == "Conv"]
        excluded = [node.name for node in nodes if node.op_type == "Softmax"]
        excluded += convs[:float_convs]
        settings: dict[str, Any] = {
            "quant_format": QuantFormat.QDQ,
            "per_channel": True,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "calibrate_method": CalibrationMethod.MinMax,
            "nodes_to_exclude": excluded,
            **options,
        }
        quantize_static(str(prepared), str(target / MODEL_FILE), _Batches(batches), **settings)
    quantized = load_bundle(target)
    quantized.meta.version = f"{bundle.meta.version}+int8"
    quantized.meta.export["quantization"] = {
        "method": "onnxruntime quantize_static, QDQ",
        "weights": "int8 per channel",
        "activations": "uint8, MinMax calibration",
        "calibration_items": len(calibration),
        "float_convs": float_convs,
        "excluded": excluded,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_meta(target, quantized.meta)
    return quantized


def quantize_resnet18(
    cache: Path, float_convs: int = FLOAT_CONVS, target: Path | None = None
) -> Path:
    """The int8 twin of the benchmark's resnet18 bundle, calibrated on the request images.

    Reused when `target` already holds one made with the same `float_convs`.
    """
    from benchmarks.serving.artifacts import bundle_dir, images_dir, int8_bundle_dir

    target = target or int8_bundle_dir(cache)
    if (target / MODEL_FILE).is_file():
        made = load_bundle(target).meta.export.get("quantization", {})
        if made.get("float_convs") == float_convs:
            return target
    images = sorted(images_dir(cache).glob("*.jpg"))
    quantize_bundle(bundle_dir(cache), target, [p.read_bytes() for p in images], float_convs)
    return target


def _scores(predictor: Any, items: list[Any]) -> dict[str, float]:
    from mlfactory.evaluation import evaluate_items

    result = evaluate_items(predictor, items)
    return {"accuracy": result["accuracy"], "f1_macro": result["f1_macro"]}


def _batch_throughput(bundle: Path, images: list[bytes], seconds: float) -> float:
    """img/s of the bundle's model on batches of 16 pre-encoded images (in this process)."""
    from mlfactory.predictor import Predictor

    predictor = Predictor.from_path(bundle)
    batch = [predictor.encode(raw) for raw in (images * 16)[:16]]
    predictor.run(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.run(batch)
        done += len(batch)
    return round(done / (time.perf_counter() - started), 2)


def digits_dataset(bundle: Path) -> Any:
    """The prepared digits dataset, checked to be the one `bundle` was trained on.

    Raises:
        RuntimeError: the digits data prepared today differs from the bundle's (its fingerprint),
            so today's test split may hold the bundle's training items.
    """
    from mlfactory.data.prepare import prepare_dataset

    dataset = prepare_dataset(_digits_config())
    trained_on = load_bundle(bundle).meta.data_fingerprint
    if trained_on != dataset.fingerprint:
        raise RuntimeError(
            f"{bundle} was trained on digits data {trained_on}, today's is "
            f"{dataset.fingerprint}: retrain it (mlfactory train digits)"
        )
    return dataset


def sweep(
    digits_bundle: Path, cache: Path, float_convs: list[int], seconds: float
) -> dict[str, Any]:
    """For each `float_convs` value: digits accuracy (int8 vs fp32) and resnet18 speed.

    Accuracy needs a trained model, so it is measured on a `digits` bundle, quantized the same
    way (calibrated on 256 images of its train split), on two sets: its test split, and every
    digit it never saw (the test split plus the digits that `max_per_class` left out of the
    prepared dataset: larger, so a one-point difference is many items, not two). Speed is the
    benchmark's resnet18 on batches of 16, in this process.
    """
    import dataclasses

    from benchmarks.serving.artifacts import bundle_dir, images_dir

    from mlfactory.data.prepare import prepare_dataset
    from mlfactory.predictor import Predictor

    dataset = digits_dataset(digits_bundle)
    seen = {item.key for split in ("train", "val") for item in dataset.split(split)}
    config = _digits_config()
    uncapped = dataclasses.replace(config.data, max_per_class=None)
    everything = prepare_dataset(dataclasses.replace(config, data=uncapped))
    unseen = [
        item
        for split in ("train", "val", "test")
        for item in everything.split(split)
        if item.key not in seen
    ]
    train = sorted(dataset.split("train"), key=lambda item: item.key)[:CALIBRATION_ITEMS]
    evaluation = {"test": dataset.split("test"), "unseen": unseen}
    calibration = [item.read_bytes() for item in train]
    images = [p.read_bytes() for p in sorted(images_dir(cache).glob("*.jpg"))]

    def scores(bundle: Path) -> dict[str, dict[str, float]]:
        predictor = Predictor.from_path(bundle)
        return {name: _scores(predictor, items) for name, items in evaluation.items()}

    fp32 = scores(digits_bundle)
    result: dict[str, Any] = {
        "digits_bundle": str(digits_bundle),
        "backbone": load_bundle(digits_bundle).meta.config.get("model", {}).get("backbone"),
        "items": {name: len(items) for name, items in evaluation.items()},
        "calibration_items": len(calibration),
        "fp32": fp32,
        "resnet18_fp32_img_per_s": _batch_throughput(bundle_dir(cache), images, seconds),
        "int8": {},
    }
    for count in float_convs:
        folder = cache / "quantize-sweep" / f"float-convs-{count}"
        digits = quantize_bundle(digits_bundle, folder / "digits", calibration, count)
        int8 = scores(digits.path)
        resnet = quantize_resnet18(cache, count, folder / "resnet18")
        result["int8"][str(count)] = {
            **int8,
            "accuracy_drop_points": {
                name: round(100 * (fp32[name]["accuracy"] - int8[name]["accuracy"]), 2)
                for name in evaluation
            },
            "resnet18_img_per_s": _batch_throughput(resnet, images, seconds),
        }
    return result


def _digits_config() -> Any:
    from mlfactory.config.loader import load_recipe

    return load_recipe("digits").config


def main() -> None:
    parser = argparse.ArgumentParser(description="int8 bundles for the serving benchmark")
    sub = parser.add_subparsers(dest="command", required=True)
    resnet = sub.add_parser("resnet18", help="int8 twin of the benchmark bundle")
    resnet.add_argument("--cache", type=Path, default=Path("runs/bench"))
    resnet.add_argument("--float-convs", type=int, default=FLOAT_CONVS)
    check = sub.add_parser("check", help="is this digits bundle trained on today's data?")
    check.add_argument("--bundle", type=Path, required=True)
    swept = sub.add_parser("sweep", help="accuracy and speed for several --float-convs")
    swept.add_argument("--bundle", type=Path, required=True, help="a trained digits bundle")
    swept.add_argument("--cache", type=Path, default=Path("runs/bench"))
    swept.add_argument("--float-convs", default="0,1,2,3")
    swept.add_argument("--seconds", type=float, default=5.0, help="per throughput figure")
    args = parser.parse_args()
    if args.command == "resnet18":
        print(json.dumps({"bundle": str(quantize_resnet18(args.cache, args.float_convs))}))
    elif args.command == "check":
        try:
            digits_dataset(args.bundle)
            print(json.dumps({"usable": True}))
        except RuntimeError as exc:
            print(json.dumps({"usable": False, "reason": str(exc)}))
    else:
        counts = [int(c) for c in args.float_convs.split(",")]
        print(json.dumps(sweep(args.bundle, args.cache, counts, args.seconds)))


if __name__ == "__main__":
    main()
