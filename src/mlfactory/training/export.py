"""Export a trained Classifier to a bundle (ONNX + bundle.json) and prove the export is faithful."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlfactory.bundle import (
    EARLY_FEATURES,
    EMBEDDING,
    MODEL_FILE,
    PROBABILITIES,
    Bundle,
    BundleMeta,
    write_meta,
)
from mlfactory.data.dataset import Item
from mlfactory.errors import BundleError
from mlfactory.modalities import Encoder, stack_inputs
from mlfactory.training.float_kernels import float_kernels
from mlfactory.training.network import Classifier, InferenceGraph, example_inputs

log = logging.getLogger(__name__)

# PyTorch and ONNX Runtime run different fp32 kernels, and each picks AVX2, AVX-512 or VNNI ones
# by CPU: a faithful export differs in the last bits, amplified by the network. A probability's
# relative difference is about twice its logits' absolute one, so probabilities are compared
# relative to their value, embeddings relative to their largest component. Measured on every
# backbone family with AVX-512 and AVX2 kernels (benchmarks/parity_spread.py, docs/numerics.md):
# at most 3.6e-3 (probabilities) and 1.8e-3 (embeddings), both on efficientnet_lite0; ~5e-6 on
# MiniLM and the CNN-transformer. The tolerance is 14x the worst; the export bugs of
# tests/training/test_export.py move probabilities by far more than it.
PARITY_RTOL = 5e-2
# Probabilities this small carry no decision and are flushed to 0 or to denormals differently.
PARITY_ATOL = 1e-6
OPSET = 17


def export_bundle(
    net: Classifier,
    encoder: Encoder,
    meta: BundleMeta,
    out_dir: Path,
    parity_items: list[Item],
    assets: list[Path] | None = None,
    early_features: bool = True,
) -> Bundle:
    """Write `out_dir` as a bundle and check ONNX against PyTorch on `parity_items`.

    Args:
        net: the trained classifier (any device; exported on CPU in eval mode).
        encoder: the modality encoder used in training; defines ONNX input names and shapes.
        meta: bundle metadata; `inputs`, `outputs` and `export` are filled in here.
        out_dir: the bundle folder (replaced if it exists).
        parity_items: items (normally the test split) on which ONNX and PyTorch must agree.
        assets: extra files copied into the bundle (e.g. `tokenizer.json`).
        early_features: export a convolutional backbone's early features too (the recipe's
            `model.early_features`).

    Raises:
        BundleError: ONNX Runtime's probabilities are not PyTorch's (see `check_parity`).
    """
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    graph = InferenceGraph(net, early_features).to("cpu").eval()
    shapes = encoder.input_shapes()
    names = list(shapes)
    example = example_inputs(encoder, batch=2)
    outputs = [PROBABILITIES, EMBEDDING] + ([EARLY_FEATURES] if graph.has_early_features else [])
    dynamic_axes = {name: {0: "batch"} for name in [*names, *outputs]}
    torch.onnx.export(
        graph,
        example,
        str(out_dir / MODEL_FILE),
        input_names=names,
        output_names=outputs,
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        dynamo=False,
    )
    for asset in assets or []:
        shutil.copy2(asset, out_dir / asset.name)
    meta.inputs = shapes
    meta.outputs = outputs
    meta.export = {"opset": OPSET, "torch": torch.__version__, "float_kernels": float_kernels()}
    write_meta(out_dir, meta)
    bundle = Bundle(path=out_dir, meta=meta)
    spread = check_parity(graph, bundle, encoder, parity_items)
    meta.export["parity_max_abs_diff"] = spread.max_abs_diff
    meta.export["parity_max_rel_diff"] = spread.max_rel_diff
    meta.export["parity_max_embedding_diff"] = spread.max_embedding_diff
    meta.export["parity_items"] = len(parity_items)
    write_meta(out_dir, meta)
    return bundle


@dataclass
class ParitySpread:
    """How far ONNX Runtime's outputs are from PyTorch's on some items."""

    items: int
    max_abs_diff: float  # largest |p_onnx - p_torch|
    max_rel_diff: float  # largest |p_onnx - p_torch| / p_torch where p_torch > PARITY_ATOL
    tolerance_used: float  # largest |p_onnx - p_torch| / (PARITY_ATOL + PARITY_RTOL * p_torch)
    labels_differ: int  # items whose top label is not the same
    # largest |e_onnx - e_torch| / max(|e_torch|, |e_onnx|) of an item's embedding or early features
    max_embedding_diff: float

    @property
    def within_tolerance(self) -> bool:
        """True when the export passes: every probability and embedding within tolerance."""
        return self.tolerance_used <= 1.0 and self.max_embedding_diff <= PARITY_RTOL


def parity_spread(
    graph: InferenceGraph, bundle: Bundle, encoder: Encoder, items: list[Item], batch_size: int = 64
) -> ParitySpread:
    """Compare PyTorch on training's preprocessing with ONNX Runtime on the bundle's.

    Args:
        graph: the trained network in eval mode, as exported.
        bundle: the written bundle; its model runs in ONNX Runtime on inputs encoded by its own
            preprocessing (`bundle.json`), as a server does, so a bundle that preprocesses
            differently from training shows here too.
        encoder: the preprocessing training used; its inputs go to `graph`.
        items: the inputs to compare on (normally the test split).
        batch_size: items per forward pass.
    """
    session = bundle.session()
    served = bundle.encoder()
    expected, got, embedding_diffs = [], [], []
    for start in range(0, len(items), batch_size):
        raws = [item.read_bytes() for item in items[start : start + batch_size]]
        batch = stack_inputs([encoder(raw) for raw in raws])
        with torch.no_grad():
            outputs = graph(*(torch.from_numpy(a) for a in batch.values()))
        names = [PROBABILITIES, EMBEDDING, EARLY_FEATURES][: len(outputs)]
        onnx_outputs = session.run(names, stack_inputs([served(raw) for raw in raws]))
        expected.append(outputs[0].numpy().astype(np.float64))
        got.append(np.asarray(onnx_outputs[0], dtype=np.float64))
        # The embedding and the early features: relative to their largest component.
        for torch_vectors, onnx_vectors in zip(outputs[1:], onnx_outputs[1:], strict=True):
            pair = np.stack([torch_vectors.numpy(), onnx_vectors]).astype(np.float64)
            scale = np.maximum(np.abs(pair).max(axis=(0, 2)), np.finfo(np.float32).tiny)
            embedding_diffs.append(np.abs(pair[1] - pair[0]).max(axis=1) / scale)
    p_torch, p_onnx = np.concatenate(expected), np.concatenate(got)
    diff = np.abs(p_onnx - p_torch)
    above = p_torch > PARITY_ATOL
    return ParitySpread(
        items=len(items),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float((diff[above] / p_torch[above]).max(initial=0.0)),
        tolerance_used=float((diff / (PARITY_ATOL + PARITY_RTOL * p_torch)).max()),
        labels_differ=int((p_onnx.argmax(axis=1) != p_torch.argmax(axis=1)).sum()),
        max_embedding_diff=float(np.concatenate(embedding_diffs).max()),
    )


def check_parity(
    graph: InferenceGraph, bundle: Bundle, encoder: Encoder, items: list[Item], batch_size: int = 64
) -> ParitySpread:
    """Measure `parity_spread` and fail unless ONNX Runtime agrees with PyTorch on every item.

    Every probability within `PARITY_ATOL + PARITY_RTOL * p_torch`, every embedding within
    `PARITY_RTOL` of its largest component (the larger of the two). That implies the same top
    label wherever the top two probabilities are further apart than their tolerances; closer,
    either is the answer.

    Raises:
        BundleError: the exported graph or the bundle's preprocessing is not the trained model's.
    """
    spread = parity_spread(graph, bundle, encoder, items, batch_size)
    if not spread.within_tolerance:
        raise BundleError(
            f"ONNX export differs from PyTorch on {spread.items} items: probabilities by up "
            f"to {spread.max_rel_diff:.1%} of their value, embeddings by "
            f"{spread.max_embedding_diff:.1%} of their scale, the top label on "
            f"{spread.labels_differ} (allowed: {PARITY_RTOL:.0%}); the exported graph or the "
            "bundle's preprocessing is not the trained model's"
        )
    log.info(
        "ONNX parity on %d items: probabilities within %.1e (relative), embeddings %.1e",
        spread.items,
        spread.max_rel_diff,
        spread.max_embedding_diff,
    )
    return spread
