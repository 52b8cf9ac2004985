"""Export a trained Classifier to a bundle (ONNX + bundle.json) and prove the export is faithful."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from mlfactory.bundle import EMBEDDING, MODEL_FILE, PROBABILITIES, Bundle, BundleMeta, write_meta
from mlfactory.data.dataset import Item
from mlfactory.errors import BundleError
from mlfactory.modalities import Encoder, stack_inputs
from mlfactory.training.network import Classifier, InferenceGraph

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
OPSET = 17


def export_bundle(
    net: Classifier,
    encoder: Encoder,
    meta: BundleMeta,
    out_dir: Path,
    parity_items: list[Item],
    assets: list[Path] | None = None,
) -> Bundle:
    """Write `out_dir` as a bundle and check ONNX against PyTorch on `parity_items`.

    Args:
        net: the trained classifier (any device; exported on CPU in eval mode).
        encoder: the modality encoder used in training; defines ONNX input names and shapes.
        meta: bundle metadata; `inputs`, `outputs` and `export` are filled in here.
        out_dir: the bundle folder (replaced if it exists).
        parity_items: items (normally the test split) on which ONNX and PyTorch must agree.
        assets: extra files copied into the bundle (e.g. `tokenizer.json`).

    Raises:
        BundleError: probabilities differ by more than `PARITY_TOLERANCE`.
    """
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    graph = InferenceGraph(net).to("cpu").eval()
    shapes = encoder.input_shapes()
    names = list(shapes)
    dtypes = encoder.input_dtypes()
    example = tuple(
        torch.from_numpy(np.zeros((2, *shape), dtype=dtypes[name]))
        for name, shape in shapes.items()
    )
    dynamic_axes = {name: {0: "batch"} for name in [*names, PROBABILITIES, EMBEDDING]}
    torch.onnx.export(
        graph,
        example,
        str(out_dir / MODEL_FILE),
        input_names=names,
        output_names=[PROBABILITIES, EMBEDDING],
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        dynamo=False,
    )
    for asset in assets or []:
        shutil.copy2(asset, out_dir / asset.name)
    meta.inputs = shapes
    meta.outputs = [PROBABILITIES, EMBEDDING]
    meta.export = {"opset": OPSET, "torch": torch.__version__}
    write_meta(out_dir, meta)
    bundle = Bundle(path=out_dir, meta=meta)
    max_diff = check_parity(graph, bundle, encoder, parity_items)
    meta.export["parity_max_abs_diff"] = max_diff
    meta.export["parity_items"] = len(parity_items)
    write_meta(out_dir, meta)
    return bundle


def check_parity(
    graph: InferenceGraph, bundle: Bundle, encoder: Encoder, items: list[Item], batch_size: int = 64
) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime probabilities on `items`."""
    session = bundle.session()
    worst = 0.0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = stack_inputs([encoder(item.read_bytes()) for item in chunk])
        with torch.no_grad():
            expected, _ = graph(*(torch.from_numpy(a) for a in batch.values()))
        got = session.run([PROBABILITIES], batch)[0]
        worst = max(worst, float(np.abs(expected.numpy() - got).max()))
    if worst > PARITY_TOLERANCE:
        raise BundleError(
            f"ONNX export differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE:g}) on "
            f"{len(items)} items"
        )
    log.info("ONNX parity on %d items: max abs diff %.2e", len(items), worst)
    return worst
