"""The OOD score inside the model: the profile's scorer appended to the bundle's ONNX graph.

Scoring an input in numpy after the model call holds the server's GIL and adds about twice
what the same arithmetic adds inside the model call (docs/benchmarks.md, "What monitoring
costs the server"). Once the profile is
written, `attach_ood_score` appends the scorer's arithmetic (`OodScorer._score`: one product
with the precomputed D x (dims + classes) matrix and a dozen small operations) to `model.onnx`,
reading its `embedding` output (and `early_features`, for a score that reads them: both
scorers, then the sum of their standardised scores). One `session.run` then returns
probabilities, embedding and `ood_score`, computed by ONNX Runtime outside the GIL.

The graph records the scorer's fingerprint (`OodScorer.fingerprint`) in the model's metadata.
The server uses the in-graph score only while the profile it loads has the same fingerprint,
and otherwise scores in numpy as it does for bundles exported before this existed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlfactory.bundle import (
    EARLY_FEATURES,
    EMBEDDING,
    OOD_SCORE,
    OOD_SCORER_KEY,
    Bundle,
    write_meta,
)
from mlfactory.data.dataset import Item
from mlfactory.errors import BundleError
from mlfactory.modalities import stack_inputs
from mlfactory.monitoring.ood import OodScorer
from mlfactory.monitoring.profile import load_profile

log = logging.getLogger(__name__)
# Names of the appended nodes and constants start with this (no clash with the exported graph).
PREFIX = "mlfactory_ood/"
# Both scores are float32 with the same arithmetic in another order. In-distribution inputs
# score about 1 (about 0 with early features), so differences are taken relative to
# |score| + 1: relative for large scores, absolute for small ones, whose float32 cancellation
# the two orders round differently. Measured: ~1e-5 on trained bundles, 2e-4 on a bundle
# trained for one epoch on 240 digits (a 5-direction profile), ~4e-6 with early features (the
# demo). A wrong graph (another matrix, a lost normalisation) is off by far more.
SCORE_RTOL = 1e-3
CHECK_ITEMS = 64
# Reduce operators take their axes as an input from this opset on, as an attribute before.
AXES_AS_INPUT = 18


def ood_nodes(scorer: OodScorer, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and constants that compute `ood_score` from the model's outputs.

    The embedding's scorer alone, or with early features both scorers and the sum of their
    standardised scores: a x (1 / spread) + b x (1 / early spread) + offset.
    """
    if scorer.early is None:
        return scorer_nodes(scorer, EMBEDDING, OOD_SCORE, opset)
    embedding_score, early_score = PREFIX + "embedding_score", PREFIX + "early_score"
    nodes, constants = scorer_nodes(scorer, EMBEDDING, embedding_score, opset, "embedding/")
    more_nodes, more_constants = scorer_nodes(
        scorer.early, EARLY_FEATURES, early_score, opset, "early/"
    )
    mean, spread, early_mean, early_spread = (float(v) for v in scorer.standardization)
    scale = {
        "scale": 1.0 / spread,
        "early_scale": 1.0 / early_spread,
        "offset": -mean / spread - early_mean / early_spread,
    }
    constants += [
        *more_constants,
        *(
            numpy_helper.from_array(np.asarray([value], np.float32), PREFIX + local)
            for local, value in scale.items()
        ),
    ]

    def node(op: str, inputs: list[str], output: str) -> onnx.NodeProto:
        return helper.make_node(
            op, inputs, [output], name=output if output.startswith(PREFIX) else PREFIX + output
        )

    nodes += [
        *more_nodes,
        node("Mul", [embedding_score, PREFIX + "scale"], PREFIX + "scaled_score"),
        node("Mul", [early_score, PREFIX + "early_scale"], PREFIX + "scaled_early_score"),
        node("Add", [PREFIX + "scaled_score", PREFIX + "scaled_early_score"], PREFIX + "both"),
        node("Add", [PREFIX + "both", PREFIX + "offset"], OOD_SCORE),
    ]
    return nodes, constants


def scorer_nodes(
    scorer: OodScorer, embedding: str, score: str, opset: int, part: str = ""
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and constants that compute `score` (N,) from `embedding` (N, D).

    Args:
        scorer: the fitted scorer (its precomputed float32 matrices become constants); its
            early features' scorer, if any, is not part of these nodes (see `ood_nodes`).
        embedding: the name of the (N, D) float32 tensor to score.
        score: the name of the (N,) output.
        opset: the default-domain opset of the graph the nodes go into.
        part: starts the local names (after `PREFIX`), so that two scorers fit in one graph.
    """
    fused = scorer._fused
    dims, width = scorer._dims, fused.shape[0]
    classes = fused.shape[1] - dims

    def name(local: str) -> str:
        return PREFIX + part + local

    precision = scorer._fused.dtype

    def const(local: str, value: Any, dtype: Any = precision) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name(local))

    constants = [
        const("fused", fused),
        const("weights", scorer._weights.reshape(dims, 1)),
        const("residual", [scorer._residual]),
        const("class_constants", scorer._constants.reshape(1, classes)),
        const("minus_two", [-2.0]),
        const("norm_floor", [1e-24]),
        const("per_dim", [1.0 / width]),
        const("start", [0], np.int64),
        const("split", [dims], np.int64),
        const("end", [dims + classes], np.int64),
        const("axis", [1], np.int64),
    ]

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> onnx.NodeProto:
        # Local names get the prefix; the graph's embedding and the score keep their own.
        outside = {"EMBEDDING": embedding, "SCORE": score} if precision == np.float32 else {}
        names = [outside.get(local, name(local)) for local in [*inputs, output]]
        return helper.make_node(op, names[:-1], names[-1:], name=name(output), **attributes)

    def reduce(op: str, source: str, output: str, keepdims: int) -> onnx.NodeProto:
        if opset >= AXES_AS_INPUT:
            return node(op, [source, "axis"], output, keepdims=keepdims)
        return node(op, [source], output, axes=[1], keepdims=keepdims)

    nodes = []
    if precision == np.float64:  # cast in, score in float64, cast the score out
        nodes.append(
            helper.make_node(
                "Cast",
                [embedding],
                [name("EMBEDDING")],
                to=TensorProto.DOUBLE,
                name=name("EMBEDDING"),
            )
        )
    nodes += [
        node("MatMul", ["EMBEDDING", "fused"], "products"),
        reduce("ReduceSumSquare", "EMBEDDING", "squared_norms", keepdims=1),
    ]
    if scorer.normalize:  # (x / |x|) @ F = (x @ F) / |x|, and |x / |x||^2 = 1
        nodes += [
            node("Max", ["squared_norms", "norm_floor"], "floored"),
            node("Sqrt", ["floored"], "norms"),
            node("Div", ["products", "norms"], "scaled"),
        ]
        products, norm_terms = "scaled", "residual"
    else:
        nodes.append(node("Mul", ["squared_norms", "residual"], "norm_terms"))
        products, norm_terms = "products", "norm_terms"
    nodes += [
        node("Slice", [products, "start", "split", "axis"], "along"),
        node("Slice", [products, "split", "end", "axis"], "linear"),
        node("Mul", ["along", "along"], "along_squared"),
        node("MatMul", ["along_squared", "weights"], "weighted"),
        node("Add", ["weighted", norm_terms], "rows"),
        node("Add", ["rows", "class_constants"], "shifted"),
        node("Mul", ["linear", "minus_two"], "cross"),
        node("Add", ["shifted", "cross"], "distances"),
        reduce("ReduceMin", "distances", "nearest", keepdims=0),
        node("Mul", ["nearest", "per_dim"], "SCORE"),
    ]
    if precision == np.float64:
        nodes.append(
            helper.make_node(
                "Cast", [name("SCORE")], [score], to=TensorProto.FLOAT, name=name("score_float")
            )
        )
    return nodes, constants


def scorer_model(scorer: OodScorer, opset: int = AXES_AS_INPUT) -> onnx.ModelProto:
    """The scorer alone as an ONNX model: input `embedding` (N, D) (and `early_features`
    (N, E) when it reads them), output `ood_score` (N,)."""
    nodes, constants = ood_nodes(scorer, opset)
    inputs = [helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["N", _width(scorer)])]
    if scorer.early is not None:
        inputs.append(
            helper.make_tensor_value_info(
                EARLY_FEATURES, TensorProto.FLOAT, ["N", _width(scorer.early)]
            )
        )
    graph = helper.make_graph(
        nodes,
        "ood_score",
        inputs,
        [helper.make_tensor_value_info(OOD_SCORE, TensorProto.FLOAT, ["N"])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def attach_ood_score(bundle: Bundle, check_items: list[Item]) -> bool:
    """Append the bundle's OOD scorer to its `model.onnx` as the output `ood_score`.

    Reads the profile back from the bundle (the server scores with what it loads, so the graph
    is built from the same arrays), rewrites `model.onnx` (replacing a scorer appended before),
    checks the new output against the numpy scorer on `check_items`, then records it in
    `bundle.json` (outputs and the measured difference).

    Args:
        bundle: a bundle whose profile has been written.
        check_items: real inputs (normally the test split; the first `CHECK_ITEMS` are used).

    Returns:
        False when the bundle has no profile (nothing is changed).

    Raises:
        BundleError: the in-graph score differs from the numpy scorer's.
    """
    profile = load_profile(bundle.path)
    if profile is None:
        return False
    model = onnx.load(str(bundle.model_path))
    remove_scorer(model)  # one appended before, for another profile
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if profile.ood.reads_early_features and EARLY_FEATURES not in {
        output.name for output in model.graph.output
    }:
        raise BundleError(
            f"{bundle.model_path}: the profile's OOD score reads '{EARLY_FEATURES}', which "
            "the model does not output"
        )
    nodes, constants = ood_nodes(profile.ood, opset)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(constants)
    batch = _batch_dimension(model)
    model.graph.output.append(helper.make_tensor_value_info(OOD_SCORE, TensorProto.FLOAT, [batch]))
    onnx.helper.set_model_props(
        model,
        {
            **{prop.key: prop.value for prop in model.metadata_props},
            OOD_SCORER_KEY: profile.ood.fingerprint(),
        },
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(bundle.model_path))
    difference = _largest_difference(bundle, profile.ood, check_items[:CHECK_ITEMS])
    if difference > SCORE_RTOL:
        raise BundleError(
            f"{bundle.model_path}: the OOD score in the graph differs from the profile's scorer "
            f"by {difference:.1e} (relative to |score| + 1; at most {SCORE_RTOL:.0e} allowed)"
        )
    bundle.meta.outputs = [*(o for o in bundle.meta.outputs if o != OOD_SCORE), OOD_SCORE]
    bundle.meta.export["ood_score_in_graph_max_rel_diff"] = difference
    write_meta(bundle.path, bundle.meta)
    log.debug("OOD score appended to %s (largest difference %.1e)", bundle.model_path, difference)
    return True


def remove_scorer(model: onnx.ModelProto) -> None:
    """Take out the nodes, constants and output a previous `attach_ood_score` added."""
    graph = model.graph
    nodes = [node for node in graph.node if not node.name.startswith(PREFIX)]
    constants = [c for c in graph.initializer if not c.name.startswith(PREFIX)]
    outputs = [output for output in graph.output if output.name != OOD_SCORE]
    for field, kept in ((graph.node, nodes), (graph.initializer, constants)):
        del field[:]
        field.extend(kept)
    del graph.output[:]
    graph.output.extend(outputs)


def _batch_dimension(model: onnx.ModelProto) -> str | int:
    """The name (or size) of the embedding output's first dimension."""
    for output in model.graph.output:
        if output.name == EMBEDDING:
            first = output.type.tensor_type.shape.dim[0]
            return first.dim_param or first.dim_value
    raise BundleError(f"the model has no '{EMBEDDING}' output")


def _largest_difference(bundle: Bundle, scorer: OodScorer, items: list[Item]) -> float:
    """Largest difference of the graph's scores from the numpy scorer's on `items`, relative
    to |numpy score| + 1 (see `SCORE_RTOL`)."""
    if not items:
        return 0.0
    session, encoder = bundle.session(), bundle.encoder()
    inputs = stack_inputs([encoder(item.read_bytes()) for item in items])
    names = [OOD_SCORE, EMBEDDING] + ([EARLY_FEATURES] if scorer.reads_early_features else [])
    in_graph, *outputs = session.run(names, inputs)
    in_numpy = scorer.score(*outputs)
    difference = np.abs(np.asarray(in_graph, np.float64) - in_numpy)
    return float(np.max(difference / (np.abs(in_numpy) + 1.0)))


def _width(scorer: OodScorer) -> int:
    return int(scorer._fused.shape[0])
