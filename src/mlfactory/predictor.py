"""Run a bundle on raw inputs with ONNX Runtime: the one inference path of CLI, API, evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlfactory.bundle import (
    EARLY_FEATURES,
    EMBEDDING,
    OOD_SCORE,
    OOD_SCORER_KEY,
    PROBABILITIES,
    Bundle,
    load_bundle,
)
from mlfactory.errors import BundleError, InputError, MlfactoryError
from mlfactory.modalities import stack_inputs

if TYPE_CHECKING:
    from mlfactory.monitoring.profile import ReferenceProfile


@dataclass
class Prediction:
    """One input's result."""

    label: str
    score: float
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "score": self.score, "probabilities": self.probabilities}


@dataclass
class BatchOutput:
    """Raw model outputs for a batch."""

    probabilities: np.ndarray  # (N, num_labels)
    embeddings: np.ndarray  # (N, embedding_dim)
    # (N,) the OOD scores the model's graph computed, when it does for the loaded profile.
    ood_scores: np.ndarray | None = None
    # (N, E) the early features, when they were asked for (scoring outside the graph).
    early_features: np.ndarray | None = None

    def rows(self, start: int, end: int) -> BatchOutput:
        """The outputs of rows `start` to `end` (exclusive)."""
        scores = None if self.ood_scores is None else self.ood_scores[start:end]
        early = None if self.early_features is None else self.early_features[start:end]
        return BatchOutput(self.probabilities[start:end], self.embeddings[start:end], scores, early)


class Predictor:
    """A loaded bundle: its encoder and one ONNX Runtime session, created once.

    Attributes:
        profile: the bundle's monitoring profile, when the server loaded one (see
            `mlfactory.serving.monitoring`); None elsewhere, or for a bundle without one.
            While it is the profile the model's graph scores with (`ood_score` output, see
            `mlfactory.training.ood_graph`), `run` returns the graph's OOD scores too; while
            it is another profile whose score reads the early features, `run` returns those.
        scorer_fingerprint: the profile's `OodScorer.fingerprint()` (None without one).
        profile_problem: why the server serves this bundle without its profile (none, a
            corrupt one, one made for another model), for the monitoring endpoints to say.
    """

    def __init__(
        self, bundle: Bundle, intra_op_threads: int = 0, inter_op_threads: int = 0
    ) -> None:
        self.bundle = bundle
        self.labels = bundle.meta.labels
        self.encoder = bundle.encoder()
        self.session = bundle.session(intra_op_threads, inter_op_threads)
        self._profile: ReferenceProfile | None = None
        self._outputs = [PROBABILITIES, EMBEDDING]
        self.scorer_fingerprint: str | None = None
        self.profile_problem: str | None = None

    @property
    def profile(self) -> ReferenceProfile | None:
        return self._profile

    @profile.setter
    def profile(self, profile: ReferenceProfile | None) -> None:
        self._profile = profile
        self._outputs = [PROBABILITIES, EMBEDDING]
        # what the prediction log records beside each score (computed once, not per request)
        self.scorer_fingerprint = None if profile is None else profile.ood.fingerprint()
        if profile is not None and self.graph_scorer == self.scorer_fingerprint:
            self._outputs.append(OOD_SCORE)
        elif profile is not None and profile.ood.reads_early_features and self.has_early_features:
            self._outputs.append(EARLY_FEATURES)

    @property
    def has_early_features(self) -> bool:
        """True when the model outputs `early_features` (a convolutional backbone's)."""
        return EARLY_FEATURES in {output.name for output in self.session.get_outputs()}

    @property
    def graph_scorer(self) -> str | None:
        """The fingerprint of the OOD scorer in the model's graph (None when it has none)."""
        if OOD_SCORE not in {output.name for output in self.session.get_outputs()}:
            return None
        fingerprint = self.session.get_modelmeta().custom_metadata_map.get(OOD_SCORER_KEY)
        return str(fingerprint) if fingerprint else None

    @property
    def scores_in_graph(self) -> bool:
        """True when `run` returns the OOD scores the model's graph computed."""
        return OOD_SCORE in self._outputs

    @property
    def embedding_width(self) -> int | None:
        """The width of the model's embedding output (None when the graph leaves it open)."""
        for output in self.session.get_outputs():
            if output.name == EMBEDDING and output.shape and isinstance(output.shape[-1], int):
                return int(output.shape[-1])
        return None

    @classmethod
    def from_path(
        cls, path: str | Path, intra_op_threads: int = 0, inter_op_threads: int = 0
    ) -> Predictor:
        """Load a bundle and test-run its model: a bundle that cannot serve fails here.

        Args:
            path: the bundle folder (or its `bundle.json`).
            intra_op_threads: ONNX Runtime threads inside one operator (0: its choice).
            inter_op_threads: ONNX Runtime threads across operators (0: its choice).

        Raises:
            BundleError: the bundle is missing, incomplete or corrupt, or its model does not
                load or does not fit its `bundle.json`; the message is one line.
        """
        bundle = load_bundle(path)
        try:
            predictor = cls(bundle, intra_op_threads, inter_op_threads)
        except MlfactoryError:
            raise
        except Exception as exc:  # ONNX Runtime and encoders raise their own exception types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BundleError(f"{bundle.path} does not load: {reason}") from None
        predictor.check()
        return predictor

    def encode(self, raw: bytes) -> dict[str, np.ndarray]:
        """Preprocess one raw input.

        Raises:
            InputError: the input cannot be decoded, or gives NaN or infinite model inputs.
        """
        arrays = self.encoder(raw)
        for name, array in arrays.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InputError(
                    f"the input gives NaN or infinite values in the model input '{name}'", 422
                )
        return arrays

    def run(
        self, encoded: list[dict[str, np.ndarray]], early_features: bool = False
    ) -> BatchOutput:
        """Run the model on already-encoded inputs as one batch.

        Args:
            encoded: the encoded inputs.
            early_features: also return the early features, when the model has them.
        """
        names = self._outputs
        if early_features and self.has_early_features and EARLY_FEATURES not in names:
            names = [*names, EARLY_FEATURES]
        values = dict(zip(names, self.session.run(names, stack_inputs(encoded)), strict=True))
        scores, early = values.get(OOD_SCORE), values.get(EARLY_FEATURES)
        return BatchOutput(
            np.asarray(values[PROBABILITIES]),
            np.asarray(values[EMBEDDING]),
            None if scores is None else np.asarray(scores),
            None if early is None else np.asarray(early),
        )

    @staticmethod
    def check_finite(output: BatchOutput, names: Sequence[str]) -> None:
        """Refuse a batch in which the model answered an input with NaN or infinite values.

        Args:
            output: the model's outputs for the batch.
            names: how messages name each input of the batch, e.g. `file 2 ('a.png')`.

        Raises:
            InputError: (422) naming the first such input.
        """
        finite = np.isfinite(output.probabilities).all(axis=1)
        finite &= np.isfinite(output.embeddings.reshape(len(finite), -1)).all(axis=1)
        if not finite.all():
            name = names[int(np.argmin(finite))]
            raise InputError(
                f"{name}: the model's output for it is NaN or infinite; the input is outside "
                "what the model can handle",
                422,
            )

    def to_predictions(self, probabilities: np.ndarray) -> list[Prediction]:
        """Label, score and per-label probabilities for each row."""
        results = []
        for row in probabilities:
            best = int(np.argmax(row))
            results.append(
                Prediction(
                    label=self.labels[best],
                    score=float(row[best]),
                    probabilities={
                        label: float(p) for label, p in zip(self.labels, row, strict=True)
                    },
                )
            )
        return results

    def check(self) -> None:
        """Run the modality's test input (`Modality.test_input`: a grey image, a sentence, a
        short note) through the bundle's own preprocessing and model; check what comes out.

        Catches, before the bundle serves anyone: preprocessing that fails every input (a std
        that overflows), a model that does not fit its own metadata (inputs, label count) or
        its encoder (a crop size or a tokenizer from another backbone), and a model that
        answers a plain input with NaN. Warms the session up too.

        Raises:
            BundleError: the preprocessing fails its test input, or the model's inputs or
                outputs do not match the bundle, or are not finite.
        """
        shapes = self.encoder.input_shapes()
        names = {node.name for node in self.session.get_inputs()}
        if names != set(shapes):
            raise BundleError(
                f"{self.bundle.model_path} takes inputs {sorted(names)}, but the "
                f"{self.bundle.meta.modality} encoder makes {sorted(shapes)}"
            )
        test_input = self.bundle.modality.test_input(self.bundle.meta.preprocessing)
        try:
            encoded = self.encode(test_input)
        except InputError as exc:
            raise BundleError(
                f"{self.bundle.path}: its preprocessing fails on a test input: {exc}"
            ) from None
        try:
            output = self.run([encoded])
        except Exception as exc:  # ONNX Runtime raises its own exception types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BundleError(f"{self.bundle.model_path} fails on a test input: {reason}") from None
        expected = (1, len(self.labels))
        if output.probabilities.shape != expected or output.embeddings.shape[0] != 1:
            raise BundleError(
                f"{self.bundle.model_path} returns probabilities of shape "
                f"{output.probabilities.shape}; bundle.json names {len(self.labels)} labels"
            )
        try:
            self.check_finite(output, ["test input"])
        except InputError:
            raise BundleError(
                f"{self.bundle.model_path} answers a test input with NaN or infinite values: "
                "the model is broken (a training run that diverged, a corrupt export)"
            ) from None

    def predict(self, raws: list[bytes]) -> list[Prediction]:
        """Encode and classify raw inputs, in order.

        Raises:
            InputError: an input cannot be used; the message names it (`input 2: ...`).
        """
        names = [f"input {index}" for index in range(len(raws))]
        encoded = []
        for name, raw in zip(names, raws, strict=True):
            try:
                encoded.append(self.encode(raw))
            except InputError as exc:
                raise InputError(f"{name}: {exc}", exc.status_code) from None
        output = self.run(encoded)
        self.check_finite(output, names)
        return self.to_predictions(output.probabilities)
