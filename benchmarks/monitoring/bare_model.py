"""A bundle's model as it would be without monitoring: for the cost benchmarks' "off" side.

Export gives a monitored model two things only monitoring uses: the OOD scorer's nodes
(`ood_score`) and, for a convolutional backbone, the `early_features` output (channel
statistics of an early stage). ONNX Runtime runs every node of a graph whatever outputs a
caller asks for, so both are taken out here: the two outputs, and every node that only they
needed.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from mlfactory.bundle import EARLY_FEATURES, OOD_SCORE, load_bundle, write_meta
from mlfactory.training.ood_graph import remove_scorer


def strip_monitoring(bundle_dir: Path) -> None:
    """Rewrite the bundle's `model.onnx` (and its `bundle.json` outputs) without monitoring."""
    path = bundle_dir / "model.onnx"
    model = onnx.load(str(path))
    remove_scorer(model)
    graph = model.graph
    outputs = [o for o in graph.output if o.name not in (OOD_SCORE, EARLY_FEATURES)]
    del graph.output[:]
    graph.output.extend(outputs)
    needed = {o.name for o in outputs}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    bundle = load_bundle(bundle_dir)
    bundle.meta.outputs = [o.name for o in outputs]
    write_meta(bundle_dir, bundle.meta)
