"""The ONNX nodes and constants of the OOD scorer that `ood_graph` appends to a model's graph.

One scorer's chain (`scorer_nodes`: 6 nodes with unit-length scaling) and both scorers'
paired chain (`paired_nodes`: 9 nodes), built with as few nodes as the arithmetic allows (the
`ood_graph` module docstring says why). Nodes and constants are named under `PREFIX`, so that
`ood_graph.remove_scorer` finds them again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlfactory.bundle import EARLY_FEATURES, EMBEDDING, OOD_SCORE
from mlfactory.monitoring.ood import DistanceTerms, OodScorer

# Names of the appended nodes and constants start with this (no clash with the exported graph).
PREFIX = "mlfactory_ood/"
# Reduce operators take their axes as an input from this opset on, as an attribute before.
AXES_AS_INPUT = 18


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
    d1, d2 = embedding_terms.basis.shape[0], early_terms.basis.shape[0]
    mean, spread, early_mean, early_spread = (float(v) for v in scorer.standardization)
    a1, a2 = 1.0 / (d1 * spread), 1.0 / (d2 * early_spread)
    offset = -mean / spread - early_mean / early_spread
    embedding_projection, embedding_bias = _embedding_columns(embedding_terms, a1, offset)
    early_projection, early_bias = _early_columns(early, early_terms, a2)
    quadratic, pairs = _pair_columns(embedding_terms, early_terms, a1, a2)

    graph = _Part("", {EMBEDDING, EARLY_FEATURES, OOD_SCORE}, opset)
    graph.const("embedding/projection", embedding_projection)
    graph.const("embedding/bias", embedding_bias)
    graph.const("early/projection", early_projection)
    graph.const("early/bias", early_bias)
    graph.const("quadratic_weights", quadratic)
    graph.const("pairs", pairs)
    _add_paired_chain(graph, early.normalize)
    return graph.nodes, graph.constants


def _embedding_columns(
    terms: DistanceTerms, a1: float, offset: float
) -> tuple[np.ndarray, np.ndarray]:
    """The embedding's projection and bias in the paired chain (see `paired_nodes`)."""
    # The embedding: [B^T x | -2 a1 l_c . x + a1 (const_c + r)].
    projection = np.concatenate([terms.basis, -2.0 * a1 * terms.linear], axis=1)
    bias = np.concatenate(
        [np.zeros(terms.basis.shape[1]), a1 * (terms.constants + terms.residual) + offset]
    )
    return projection, bias


def _early_columns(
    early: OodScorer, terms: DistanceTerms, a2: float
) -> tuple[np.ndarray, np.ndarray]:
    """The early features' projection and bias in the paired chain, expanded around the centre
    of their class means (see `paired_nodes`)."""
    # The early features, around g: [B^T y | P y | -2 a2 A (m_c - g) . x + the rest].
    basis, residual = terms.basis, terms.residual
    centre = np.asarray(early.class_means, np.float64).mean(axis=0)
    rest = np.eye(basis.shape[0]) - basis @ basis.T
    # A g, then A (m_c - g) = l_c - A g and |m_c - g|_A^2 = const_c - 2 g . l_c + g . A g.
    centre_weighted = basis @ (terms.weights * (basis.T @ centre)) + residual * centre
    linear = terms.linear - centre_weighted[:, None]  # (D2, C)
    constants = terms.constants - 2.0 * centre @ terms.linear + centre @ centre_weighted
    projection = np.concatenate([basis, rest, -2.0 * a2 * linear], axis=1)
    bias = np.concatenate(
        [-(centre @ basis), -(centre @ rest), a2 * (2.0 * centre @ linear + constants)]
    )
    return projection, bias


def _pair_columns(
    embedding_terms: DistanceTerms, early_terms: DistanceTerms, a1: float, a2: float
) -> tuple[np.ndarray, np.ndarray]:
    """The weights of the quadratic term and the matrix summing every pair's linear terms,
    over the columns of the two products side by side (see `paired_nodes`)."""
    k1, classes = embedding_terms.basis.shape[1], embedding_terms.linear.shape[1]
    d2, k2 = early_terms.basis.shape
    residual = early_terms.residual
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
    return quadratic, pairs


def _add_paired_chain(graph: _Part, early_normalize: bool) -> None:
    """The paired chain's nodes, on the constants `paired_nodes` put in `graph`."""
    graph.node("LpNormalization", [EMBEDDING], ["embedding/unit"], axis=1, p=2)
    early_source = EARLY_FEATURES
    if early_normalize:
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
    mean, spread = standardization
    factor, offset = 1.0 / (terms.basis.shape[0] * spread), -mean / spread
    dtype = np.float64 if scorer.float64 else np.float32
    graph = _Part(part, {embedding}, opset, dtype)
    _add_scorer_constants(graph, terms, factor, offset, scorer.normalize)
    source = _add_scorer_input(graph, embedding, scorer.float64, scorer.normalize)
    _add_nearest_distance(graph, source)
    result = "nearest"
    if not scorer.normalize:  # + a r |x|^2
        result = _add_norm_term(graph, source, factor * terms.residual)
    if scorer.float64:
        graph.node("Cast", [result], ["score"], to=TensorProto.FLOAT)
    graph.nodes[-1].output[0] = score  # the last node writes the score
    return graph.nodes, graph.constants


def _add_scorer_constants(
    graph: _Part, terms: DistanceTerms, factor: float, offset: float, normalize: bool
) -> None:
    """The chain's projection, bias, weights of the squares and split (see `scorer_nodes`)."""
    dims, classes = terms.basis.shape[1], terms.linear.shape[1]
    constant_terms = factor * terms.constants + offset
    if normalize:
        constant_terms = constant_terms + factor * terms.residual
    graph.const("projection", np.concatenate([terms.basis, -2.0 * factor * terms.linear], axis=1))
    graph.const("bias", np.concatenate([np.zeros(dims), constant_terms]))
    graph.const("weights", np.repeat(factor * terms.weights[:, None], classes, axis=1))
    graph.const("split", [dims, classes], np.int64)


def _add_scorer_input(graph: _Part, embedding: str, float64: bool, normalize: bool) -> str:
    """Cast `embedding` to float64 and scale it to unit length, as the scorer needs; the name
    of the tensor to score."""
    source = embedding
    if float64:
        graph.node("Cast", [source], ["input"], to=TensorProto.DOUBLE)
        source = "input"
    if normalize:
        graph.node("LpNormalization", [source], ["unit"], axis=1, p=2)
        source = "unit"
    return source


def _add_nearest_distance(graph: _Part, source: str) -> None:
    """`nearest`: the smallest of the distances of `source` to every class (without the
    a r |x|^2 term when the input is not unit-length)."""
    graph.node("Gemm", [source, "projection", "bias"], ["products"])
    graph.node("Split", ["products", "split"], ["along", "shifted"], axis=1)
    graph.node("Mul", ["along", "along"], ["along_squared"])
    graph.node("Gemm", ["along_squared", "weights", "shifted"], ["distances"])
    graph.reduce("ReduceMin", "distances", "nearest")


def _add_norm_term(graph: _Part, source: str, norm_factor: float) -> str:
    """`nearest` + a r |x|^2, for an input that is not unit-length; the name of the sum."""
    graph.const("norm_factor", [norm_factor])
    graph.reduce("ReduceSumSquare", source, "squared_norms")
    graph.node("Mul", ["squared_norms", "norm_factor"], ["norm_terms"])
    graph.node("Add", ["nearest", "norm_terms"], ["total"])
    return "total"
