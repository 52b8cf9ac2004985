"""The OOD score inside the model: the profile's scorer appended to the bundle's ONNX graph.

Scoring an input in numpy after the model call holds the server's GIL and adds about twice
what the same arithmetic adds inside the model call (docs/benchmarks.md, "What monitoring
costs the server"). Once the profile is
written, `attach_ood_score` appends the scorer's arithmetic (`OodScorer._score`) to
`model.onnx`, reading its `embedding` output (and `early_features`, for a score that reads
them: both scorers, then the sum of their standardised scores). One `session.run` then returns
probabilities, embedding and `ood_score`, computed by ONNX Runtime outside the GIL.

ONNX Runtime spends a few microseconds on every node, however small its arrays, so the scorer
is built from as few nodes as the arithmetic allows (`scorer_nodes`): every constant factor is
folded into the two products, and a scorer with unit-length scaling is 6 nodes. The score that
reads early features too is one chain of 9 nodes (`paired_nodes`): both scorers' products side
by side, one quadratic term, and the sum of the two minima taken as one minimum over pairs of
classes. (Models with more classes than `MAX_PAIRED_CLASSES`, an embedding scored without
unit-length scaling, or one scored in float64 (`FLOAT64_ABOVE` in `mlfactory.monitoring.ood`),
get the two scorers one after the other and their sum: 15 nodes, 17 with the embedding's casts
to float64 and back.)

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
# trained for one epoch on 240 digits (a 5-direction profile), ~1e-5 with early features (the
# benchmark's digits and speech bundles). A wrong graph (another matrix, a lost normalisation)
# is off by far more.
SCORE_RTOL = 1e-3
CHECK_ITEMS = 64
# Reduce operators take their axes as an input from this opset on, as an attribute before.
AXES_AS_INPUT = 18
# The paired chain has a column per pair of classes: up to 144 for 12 classes, a product with a
# few rows and a fraction of the embedding's matrix; beyond, its matrix grows as classes^2.
MAX_PAIRED_CLASSES = 12


class _Part:
    """Collects appended nodes and constants under `PREFIX` + `part` (graph tensors named in
    `outside` keep their names)."""

    def __init__(self, part: str, outside: set[str], opset: int, dtype: Any = np.float32) -> None:
        self.part, self.outside, self.opset, self.dtype = part, outside, opset, dtype
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def name(self, local: str) -> str:
        return local if local in self.outside else PREFIX + self.part + local

    def const(self, local: str, value: Any, value_type: Any = None) -> None:
        array = np.asarray(value, dtype=self.dtype if value_type is None else value_type)
        self.constants.append(numpy_helper.from_array(array, self.name(local)))

    def node(self, op: str, inputs: list[str], outputs: list[str], **attributes: Any) -> None:
        self.nodes.append(
            helper.make_node(
                op,
                [self.name(local) for local in inputs],
                [self.name(local) for local in outputs],
                name=PREFIX + self.part + outputs[0],
                **attributes,
            )
        )

    def reduce(self, op: str, source: str, output: str) -> None:
        """`op` over axis 1, without keeping it (axes as an input or an attribute, by opset)."""
        if self.opset < AXES_AS_INPUT:
            self.node(op, [source], [output], axes=[1], keepdims=0)
            return
        if not any(c.name == self.name("axis") for c in self.constants):
            self.const("axis", [1], np.int64)
        self.node(op, [source, "axis"], [output], keepdims=0)


def ood_nodes(scorer: OodScorer, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and constants that compute `ood_score` from the model's outputs.

    The embedding's scorer alone, or with early features both scorers, each giving its
    standardised score (the standardisation is folded into its constants), then their sum.
    """
    if scorer.early is None:
        return scorer_nodes(scorer, EMBEDDING, OOD_SCORE, opset)
    if (
        scorer.normalize
        and not scorer.float64  # the paired chain expands the embedding's distance in float32
        and len(scorer.class_means) <= MAX_PAIRED_CLASSES
    ):
        return paired_nodes(scorer, opset)
    mean, spread, early_mean, early_spread = (float(v) for v in scorer.standardization)
    embedding_score, early_score = PREFIX + "embedding_score", PREFIX + "early_score"
    nodes, constants = scorer_nodes(
        scorer, EMBEDDING, embedding_score, opset, "embedding/", (mean, spread)
    )
    more_nodes, more_constants = scorer_nodes(
        scorer.early, EARLY_FEATURES, early_score, opset, "early/", (early_mean, early_spread)
    )
    both = helper.make_node(
        "Add", [embedding_score, early_score], [OOD_SCORE], name=PREFIX + "ood_score"
    )
    return [*nodes, *more_nodes, both], [*constants, *more_constants]


def paired_nodes(
    scorer: OodScorer, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Both scorers in one chain of 9 float32 nodes: `ood_score` from `embedding` and
    `early_features`, the same sum of standardised minima as `ood_nodes`' two chains.

    Each scorer's distance to class c is a quadratic term that no class changes plus a term
    linear in the input: d_c(x) = q(x) + s_c(x). The score is a1 min_c d1_c + a2 min_c d2_c +
    offset (a: 1 / (D spread), offset: -mean / spread of each), that is

        a1 q1 + a2 q2 + min over pairs (c, c') of [a1 s1_c + a2 s2_c' + offset],

    so one product gives both scorers' projections and linear terms (`side_by_side`), one
    product the weighted squares (`quadratic`), and one more every pair's linear terms with the
    quadratic added, of which ReduceMin takes the smallest. The embedding's part is
    `scorer_nodes`' expansion (unit length, so |x|^2 = 1). The early features' part is expanded
    around the centre g of their class means, with the residual directions kept as columns
    (y = x - g, B the basis, P = I - B B^T the residual projector, v the inverse variances along
    B, r the inverse residual variance, A = B diag(v) B^T + r P, m_c the class means):

        d_c = sum_k v_k (B^T y)_k^2 + r |P y|^2 - 2 y . A (m_c - g) + |m_c - g|_A^2,

    every term of which is about the size of the distance itself. Expanded around 0 instead,
    large terms cancel (the early features have a small residual variance): that is why their
    scorer otherwise runs in float64.
    """
    embedding_terms, early = scorer.distance_terms(), scorer.early
    assert early is not None
    early_terms = early.distance_terms()
    (d1, k1), classes = embedding_terms.basis.shape, embedding_terms.linear.shape[1]
    d2, k2 = early_terms.basis.shape
    mean, spread, early_mean, early_spread = (float(v) for v in scorer.standardization)
    a1, a2 = 1.0 / (d1 * spread), 1.0 / (d2 * early_spread)
    offset = -mean / spread - early_mean / early_spread

    # The embedding: [B^T x | -2 a1 l_c . x + a1 (const_c + r)].
    embedding_projection = np.concatenate(
        [embedding_terms.basis, -2.0 * a1 * embedding_terms.linear], axis=1
    )
    embedding_bias = np.concatenate(
        [np.zeros(k1), a1 * (embedding_terms.constants + embedding_terms.residual) + offset]
    )
    # The early features, around g: [B^T y | P y | -2 a2 A (m_c - g) . x + the rest].
    basis, residual = early_terms.basis, early_terms.residual
    centre = np.asarray(early.class_means, np.float64).mean(axis=0)
    rest = np.eye(d2) - basis @ basis.T
    # A g, then A (m_c - g) = l_c - A g and |m_c - g|_A^2 = const_c - 2 g . l_c + g . A g.
    centre_weighted = basis @ (early_terms.weights * (basis.T @ centre)) + residual * centre
    linear = early_terms.linear - centre_weighted[:, None]  # (D2, C)
    constants = early_terms.constants - 2.0 * centre @ early_terms.linear + centre @ centre_weighted
    early_projection = np.concatenate([basis, rest, -2.0 * a2 * linear], axis=1)
    early_bias = np.concatenate(
        [-(centre @ basis), -(centre @ rest), a2 * (2.0 * centre @ linear + constants)]
    )
    # Columns of the two side by side: [along1 (k1) | s1 (C) | along2 (k2 + D2) | s2 (C)].
    columns = k1 + classes + k2 + d2 + classes
    quadratic = np.zeros((columns, 1))
    quadratic[:k1, 0] = a1 * embedding_terms.weights
    early_along = slice(k1 + classes, k1 + classes + k2 + d2)
    quadratic[early_along, 0] = a2 * np.concatenate(
        [early_terms.weights + residual, np.full(d2, residual)]
    )
    pairs = np.zeros((columns, classes * classes))
    for c in range(classes):
        pairs[k1 + c, c * classes : (c + 1) * classes] = 1.0  # s1_c in every pair (c, .)
        pairs[k1 + classes + k2 + d2 + c, c::classes] = 1.0  # s2_c in every pair (., c)

    graph = _Part("", {EMBEDDING, EARLY_FEATURES, OOD_SCORE}, opset)
    graph.const("embedding/projection", embedding_projection)
    graph.const("embedding/bias", embedding_bias)
    graph.const("early/projection", early_projection)
    graph.const("early/bias", early_bias)
    graph.const("quadratic_weights", quadratic)
    graph.const("pairs", pairs)
    graph.node("LpNormalization", [EMBEDDING], ["embedding/unit"], axis=1, p=2)
    early_source = EARLY_FEATURES
    if early.normalize:
        graph.node("LpNormalization", [EARLY_FEATURES], ["early/unit"], axis=1, p=2)
        early_source = "early/unit"
    graph.node(
        "Gemm", ["embedding/unit", "embedding/projection", "embedding/bias"], ["embedding/products"]
    )
    graph.node("Gemm", [early_source, "early/projection", "early/bias"], ["early/products"])
    graph.node("Concat", ["embedding/products", "early/products"], ["side_by_side"], axis=1)
    graph.node("Mul", ["side_by_side", "side_by_side"], ["squares"])
    graph.node("Gemm", ["squares", "quadratic_weights"], ["quadratic"])  # (N, 1)
    graph.node("Gemm", ["side_by_side", "pairs", "quadratic"], ["pair_distances"])
    graph.reduce("ReduceMin", "pair_distances", OOD_SCORE)
    return graph.nodes, graph.constants


def scorer_nodes(
    scorer: OodScorer,
    embedding: str,
    score: str,
    opset: int,
    part: str = "",
    standardization: tuple[float, float] = (0.0, 1.0),
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and constants that compute `score` (N,) from `embedding` (N, D).

    The score is (distance / D - mean) / spread, with (mean, spread) = `standardization`, and
    the distance expanded as in `DistanceTerms`. Every factor is folded into the constants:
    the x-dependent terms come from two Gemm nodes,

        [along | shifted] = x [B | -2 a L] + [0 | a const + o]
        distances = along^2 (a w 1^T) + shifted          (N, C)

    with a = 1 / (D spread) and o = -mean / spread, then the smallest over the classes.
    Unit-length scaling (`normalize`) is one LpNormalization node, and its |x|^2 = 1 puts the
    a r |x|^2 term into the constants; without it that term is added after the minimum. A
    float64 scorer casts its input to float64 and its score back to float32.

    Args:
        scorer: the fitted scorer; its early features' scorer, if any, is not part of these
            nodes (see `ood_nodes`).
        embedding: the name of the (N, D) float32 tensor to score.
        score: the name of the (N,) float32 output.
        opset: the default-domain opset of the graph the nodes go into.
        part: starts the local names (after `PREFIX`), so that two scorers fit in one graph.
        standardization: the mean and spread the score is standardised with.
    """
    terms = scorer.distance_terms()
    width, dims = terms.basis.shape
    classes = terms.linear.shape[1]
    mean, spread = standardization
    factor, offset = 1.0 / (width * spread), -mean / spread
    float64 = scorer.float64
    dtype = np.float64 if float64 else np.float32
    constant_terms = factor * terms.constants + offset
    if scorer.normalize:
        constant_terms = constant_terms + factor * terms.residual

    graph = _Part(part, {embedding}, opset, dtype)
    graph.const("projection", np.concatenate([terms.basis, -2.0 * factor * terms.linear], axis=1))
    graph.const("bias", np.concatenate([np.zeros(dims), constant_terms]))
    graph.const("weights", np.repeat(factor * terms.weights[:, None], classes, axis=1))
    graph.const("split", [dims, classes], np.int64)
    source = embedding
    if float64:
        graph.node("Cast", [source], ["input"], to=TensorProto.DOUBLE)
        source = "input"
    if scorer.normalize:
        graph.node("LpNormalization", [source], ["unit"], axis=1, p=2)
        source = "unit"
    graph.node("Gemm", [source, "projection", "bias"], ["products"])
    graph.node("Split", ["products", "split"], ["along", "shifted"], axis=1)
    graph.node("Mul", ["along", "along"], ["along_squared"])
    graph.node("Gemm", ["along_squared", "weights", "shifted"], ["distances"])
    graph.reduce("ReduceMin", "distances", "nearest")
    result = "nearest"
    if not scorer.normalize:  # + a r |x|^2
        graph.const("norm_factor", [factor * terms.residual])
        graph.reduce("ReduceSumSquare", source, "squared_norms")
        graph.node("Mul", ["squared_norms", "norm_factor"], ["norm_terms"])
        graph.node("Add", ["nearest", "norm_terms"], ["total"])
        result = "total"
    if float64:
        graph.node("Cast", [result], ["score"], to=TensorProto.FLOAT)
    graph.nodes[-1].output[0] = score  # the last node writes the score
    return graph.nodes, graph.constants


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
    partial = bundle.model_path.with_name(f"{bundle.model_path.name}.tmp")
    onnx.save(model, str(partial))
    partial.replace(bundle.model_path)  # a server loading the bundle meanwhile reads either model
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
    return int(scorer.class_means.shape[1])
