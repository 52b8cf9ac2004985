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

import numpy as np
import onnx
from onnx import TensorProto, helper

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
from mlfactory.training.ood_graph_nodes import AXES_AS_INPUT, PREFIX, paired_nodes, scorer_nodes

log = logging.getLogger(__name__)
# Both scores are float32 with the same arithmetic in another order. In-distribution inputs
# score about 1 (about 0 with early features), so differences are taken relative to
# |score| + 1: relative for large scores, absolute for small ones, whose float32 cancellation
# the two orders round differently. Measured: ~1e-5 on trained bundles, 2e-4 on a bundle
# trained for one epoch on 240 digits (a 5-direction profile), ~1e-5 with early features (the
# benchmark's digits and speech bundles). A wrong graph (another matrix, a lost normalisation)
# is off by far more.
SCORE_RTOL = 1e-3
CHECK_ITEMS = 64
# The paired chain has a column per pair of classes: up to 144 for 12 classes, a product with a
# few rows and a fraction of the embedding's matrix; beyond, its matrix grows as classes^2.
MAX_PAIRED_CLASSES = 12


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
