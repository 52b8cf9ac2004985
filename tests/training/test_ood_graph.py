"""The OOD score in the model's graph: the same score as the numpy scorer, on real inputs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mlfactory.bundle import EARLY_FEATURES, EMBEDDING, OOD_SCORE, PROBABILITIES, load_bundle
from mlfactory.config.loader import load_recipe
from mlfactory.errors import BundleError
from mlfactory.monitoring.ood import OodScorer
from mlfactory.monitoring.profile import ARRAYS_FILE, META_FILE, load_profile
from mlfactory.predictor import Predictor
from mlfactory.training import ood_graph
from mlfactory.training.ood_graph import SCORE_RTOL, attach_ood_score, scorer_model
from mlfactory.training.train import train
from tests.conftest import debian_data
from tests.monitoring.conftest import STAMPS, copy_with_another_profile, digit_images, png

# Both sides compute in float32 in another order (measured ~1e-5 relative on these inputs).
RTOL = 1e-4
# A score near 0 has an absolute float32 rounding, not a relative one: with early features the
# score is a sum of standardised scores, about 0 in distribution (measured ~4e-6); without, a
# digit at its class mean scores a squared distance near 0 whose terms cancel (measured 5.5e-6
# at a score of 0.038, 1.5e-4 relative, on an AVX-512 machine's trained model).
ATOL = 1e-4


@pytest.fixture(scope="module")
def real_inputs() -> list[bytes]:
    """Digits neither training nor the profile saw, and real photos the model never saw."""
    digits = [png(image) for image, _ in digit_images(offset=300, per_class=3)]
    photos = sorted(p for p in STAMPS.rglob("*.png") if not p.stem.endswith("_mirror"))
    return digits + [p.read_bytes() for p in photos[:20]]


def served(bundle_path: Path) -> Predictor:
    """The bundle loaded as the server loads it: model, then its profile."""
    predictor = Predictor.from_path(bundle_path)
    predictor.profile = load_profile(bundle_path)
    return predictor


@pytest.mark.numerics
def test_export_puts_the_profiles_ood_score_in_the_model(
    monitored_digits: Any, real_inputs: list[bytes]
) -> None:
    bundle = monitored_digits.bundle
    assert bundle.meta.outputs == [PROBABILITIES, EMBEDDING, EARLY_FEATURES, OOD_SCORE]
    assert bundle.meta.export["ood_score_in_graph_max_rel_diff"] <= SCORE_RTOL
    predictor = served(bundle.path)
    assert predictor.profile is not None and predictor.scores_in_graph
    assert predictor.graph_scorer == predictor.profile.ood.fingerprint()
    assert predictor.profile.ood.reads_early_features
    output = predictor.run([predictor.encode(raw) for raw in real_inputs], early_features=True)
    assert output.ood_scores is not None and output.ood_scores.shape == (len(real_inputs),)
    expected = predictor.profile.ood.score(output.embeddings, output.early_features)
    np.testing.assert_allclose(output.ood_scores, expected, rtol=RTOL, atol=ATOL)
    # Not a constant: the photos score far above the digits.
    digits, photos = expected[:30], expected[30:]
    assert np.median(photos) > np.median(digits)
    assert output.rows(2, 5).ood_scores.tolist() == output.ood_scores[2:5].tolist()  # type: ignore[union-attr]


@pytest.mark.numerics
@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("early", [False, True])
def test_the_scorer_graph_is_the_numpy_scorer(
    monitored_digits: Any, real_inputs: list[bytes], opset: int, normalize: bool, early: bool
) -> None:
    """Fitted on real embeddings (and early features), with and without unit-length scaling,
    in both axes styles."""
    predictor = Predictor(monitored_digits.bundle)
    output = predictor.run([predictor.encode(raw) for raw in real_inputs], early_features=True)
    assert output.early_features is not None
    features = output.early_features if early else None
    scorer = OodScorer.fit(
        output.embeddings[:30],
        np.arange(30) % 3,
        dims=8,
        normalize=normalize,
        early_features=None if features is None else features[:30],
    )
    assert scorer.reads_early_features == early
    model = scorer_model(scorer, opset)
    if normalize:  # every node costs the model call a few microseconds, whatever its size
        # with early features: one chain over pairs of classes (3 classes here)
        assert len(model.graph.node) == (9 if early else 6)
    assert_graph_scores_as_numpy(model, scorer, output.embeddings, features)


@pytest.mark.numerics
def test_more_classes_than_pairs_allow_get_two_chains(
    monitored_digits: Any, real_inputs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `MAX_PAIRED_CLASSES`, the two scorers run one after the other, then their sum."""
    predictor = Predictor(monitored_digits.bundle)
    output = predictor.run([predictor.encode(raw) for raw in real_inputs], early_features=True)
    assert output.early_features is not None
    scorer = OodScorer.fit(
        output.embeddings[:30],
        np.arange(30) % 3,
        dims=8,
        early_features=output.early_features[:30],
    )
    monkeypatch.setattr(ood_graph, "MAX_PAIRED_CLASSES", 2)
    model = scorer_model(scorer)
    assert len(model.graph.node) == 15
    assert_graph_scores_as_numpy(model, scorer, output.embeddings, output.early_features)


@pytest.mark.numerics
def test_an_embedding_scored_in_float64_gets_two_chains_in_float64(
    monitored_digits: Any, real_inputs: list[bytes]
) -> None:
    """A narrow embedding with a residual variance so small that float32 would cancel its
    terms (here the model's 48 early features stand in for one) is scored in float64, in
    numpy and in the graph: not the float32 paired chain, though 3 classes would allow it."""
    predictor = Predictor(monitored_digits.bundle)
    output = predictor.run([predictor.encode(raw) for raw in real_inputs], early_features=True)
    assert output.early_features is not None
    narrow = output.early_features
    scorer = OodScorer.fit(narrow[:30], np.arange(30) % 3, early_features=narrow[:30])
    assert scorer.float64 and scorer.early is not None and scorer.early.float64
    model = scorer_model(scorer)
    casts = [node for node in model.graph.node if node.op_type == "Cast"]
    # the two chains and their sum (15 nodes), the embedding's cast in and out added
    assert len(casts) == 4 and len(model.graph.node) == 17
    assert_graph_scores_as_numpy(model, scorer, narrow, narrow)


def test_a_narrow_embedding_fitted_on_a_few_dozen_clips_exports_its_score(
    tmp_path: Path,
) -> None:
    """The birdcalls recipe on the 165 Sonic Pi samples of 14 classes, a third of them for
    validation: its 64-wide embedding, fitted on 35 clips, used to fail the export (the
    float32 scores of the graph and numpy 1.8e-2 apart after this one epoch). It now scores
    in float64."""
    samples = debian_data("/usr/share/sonic-pi/samples", "sonic-pi-samples")
    recipe = load_recipe(
        "birdcalls",
        [
            "data.source=sonic-pi:samples",
            "data.val_fraction=0.3",
            "data.test_fraction=0.3",
            "data.min_per_class=null",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
            f"tracking.artifact_location={tmp_path / 'artifacts'}",
            "trainer.max_epochs=1",
        ],
    )
    bundle = train(recipe, tmp_path / "run", progress=False).bundle
    assert len(bundle.meta.labels) > ood_graph.MAX_PAIRED_CLASSES
    assert bundle.meta.export["ood_score_in_graph_max_rel_diff"] <= SCORE_RTOL
    predictor = served(bundle.path)
    assert predictor.profile is not None and predictor.scores_in_graph
    assert predictor.profile.ood.float64 and predictor.profile.ood.class_means.shape[1] == 64
    clips = sorted(samples.glob("*.flac"))[:40]
    output = predictor.run([predictor.encode(c.read_bytes()) for c in clips], early_features=True)
    assert output.ood_scores is not None
    expected = predictor.profile.ood.score(output.embeddings, output.early_features)
    np.testing.assert_allclose(output.ood_scores, expected, rtol=RTOL, atol=ATOL)


def assert_graph_scores_as_numpy(
    model: onnx.ModelProto, scorer: OodScorer, embeddings: np.ndarray, early: np.ndarray | None
) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # and an all-zero row: unit-length scaling leaves it at zero, on both sides
    feeds = {EMBEDDING: zero_row_added(embeddings)}
    if early is not None:
        feeds[EARLY_FEATURES] = zero_row_added(early)
    in_graph = session.run([OOD_SCORE], feeds)[0]
    expected = scorer.score(*feeds.values())
    assert np.all(np.isfinite(expected)) and np.all(np.isfinite(in_graph))
    # Not a constant: the photos (rows 30 and on) score far above the digits.
    assert np.median(expected[30:-1]) > np.median(expected[:30])
    if early is None:
        np.testing.assert_allclose(in_graph, expected, rtol=RTOL, atol=ATOL)
        return
    np.testing.assert_allclose(in_graph[:-1], expected[:-1], rtol=RTOL, atol=ATOL)
    # All-zero early features (a feature map without any activation): numpy scores the zero
    # row as if it had unit length, the paired chain by its distance as it is. Both put it out
    # of distribution, above every digit.
    assert min(in_graph[-1], expected[-1]) > max(scorer.threshold, float(np.max(expected[:30])))


def zero_row_added(rows: np.ndarray) -> np.ndarray:
    return np.concatenate([rows, np.zeros((1, rows.shape[1]), rows.dtype)])


def test_a_model_scoring_for_another_profile_is_not_used(
    monitored_digits: Any, real_inputs: list[bytes], tmp_path: Path
) -> None:
    """A profile that changed after export: the server scores with numpy, with its arrays."""
    path = tmp_path / "bundle"
    copy_with_another_profile(monitored_digits.bundle.path, path)
    predictor = served(path)
    assert predictor.graph_scorer is not None and not predictor.scores_in_graph
    output = predictor.run([predictor.encode(raw) for raw in real_inputs])
    # scored outside the graph, from the model's embedding and early features
    assert output.ood_scores is None and output.early_features is not None

    # Attaching again replaces the model's scorer with the profile's.
    assert attach_ood_score(load_bundle(path), [])
    again = served(path)
    assert again.scores_in_graph and again.profile is not None
    in_graph = again.run([again.encode(raw) for raw in real_inputs]).ood_scores
    expected = again.profile.ood.score(output.embeddings, output.early_features)
    np.testing.assert_allclose(in_graph, expected, rtol=RTOL, atol=ATOL)


def test_a_bundle_exported_before_the_graph_had_the_score_still_serves(
    monitored_digits: Any, real_inputs: list[bytes], tmp_path: Path
) -> None:
    path = Path(shutil.copytree(monitored_digits.bundle.path, tmp_path / "bundle"))
    model = onnx.load(str(path / "model.onnx"))
    kept = [output for output in model.graph.output if output.name != OOD_SCORE]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    del model.metadata_props[:]
    onnx.save(model, str(path / "model.onnx"))
    predictor = served(path)
    assert predictor.graph_scorer is None and not predictor.scores_in_graph
    assert predictor.run([predictor.encode(real_inputs[0])]).ood_scores is None

    # Without a profile, nothing changes; with it, the score is put back (read from the bundle).
    for name in (ARRAYS_FILE, META_FILE):
        (path / name).rename(tmp_path / name)
    before = (path / "model.onnx").read_bytes()
    assert not attach_ood_score(load_bundle(path), [])
    assert (path / "model.onnx").read_bytes() == before
    for name in (ARRAYS_FILE, META_FILE):
        (tmp_path / name).rename(path / name)
    assert attach_ood_score(load_bundle(path), [])
    assert served(path).scores_in_graph


def test_a_score_of_early_features_needs_a_model_that_outputs_them(
    monitored_digits: Any, tmp_path: Path
) -> None:
    """A profile reading early features, on a model without that output: export refuses to
    attach it, and a server leaves monitoring off rather than fail every request."""
    from mlfactory.serving.monitoring import load_served_profile

    path = Path(shutil.copytree(monitored_digits.bundle.path, tmp_path / "bundle"))
    model = onnx.load(str(path / "model.onnx"))
    kept = [o for o in model.graph.output if o.name not in (EARLY_FEATURES, OOD_SCORE)]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(path / "model.onnx"))
    with pytest.raises(BundleError, match="reads 'early_features', which the model does not"):
        attach_ood_score(load_bundle(path), [])
    predictor = Predictor.from_path(path)
    assert not predictor.has_early_features
    profile, problem = load_served_profile(predictor.bundle, None, predictor.has_early_features)
    assert profile is None and problem is not None and "reads early features" in problem


@pytest.mark.numerics
def test_a_collapsed_embedding_scores_the_same_in_the_graph(
    monitored_digits: Any, real_inputs: list[bytes]
) -> None:
    """A digits model trained one epoch at lr 0.002 on 320 digits collapsed: most inputs got an
    all-zero embedding, the rest one unit direction per class, and the export failed (the
    graph's score 0.1 from numpy's). The embedding's held-out scores had no spread, and
    standardising by a spread of 1e-12 made float64 rounding of a zero distance (1e-13) the
    score. The same on real early features, with such an embedding: one direction per class."""
    predictor = Predictor(monitored_digits.bundle)
    output = predictor.run([predictor.encode(raw) for raw in real_inputs], early_features=True)
    assert output.early_features is not None
    labels = np.arange(len(real_inputs)) % 3
    # The digits: their class's direction (a real embedding's), at several lengths.
    collapsed = np.zeros_like(output.embeddings)
    lengths = np.linspace(0.5, 2.0, 30, dtype=np.float32)[:, None]
    collapsed[:30] = output.embeddings[labels[:30]] * lengths
    scorer = OodScorer.fit(
        collapsed[:30], labels[:30], dims=8, early_features=output.early_features[:30]
    )
    assert scorer.distance_terms().residual > 1e5  # no within-class spread at all
    model = scorer_model(scorer, 17)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {EMBEDDING: collapsed, EARLY_FEATURES: output.early_features}
    in_graph = session.run([OOD_SCORE], feeds)[0]
    expected = scorer.score(collapsed, output.early_features)
    difference = np.abs(in_graph - expected) / (np.abs(expected) + 1.0)
    assert difference.max() <= SCORE_RTOL
    # The early features still put the photos (all-zero embeddings) above the digits.
    assert np.median(expected[30:]) > np.median(expected[:30])
