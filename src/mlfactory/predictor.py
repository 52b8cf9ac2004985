"""Run a bundle on raw inputs with ONNX Runtime: the one inference path of CLI, API, evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlfactory.bundle import EMBEDDING, PROBABILITIES, Bundle, load_bundle
from mlfactory.errors import BundleError
from mlfactory.modalities import stack_inputs

# numpy types of ONNX tensor element types an encoder may produce.
ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


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


class Predictor:
    """A loaded bundle: its encoder and one ONNX Runtime session, created once."""

    def __init__(
        self, bundle: Bundle, intra_op_threads: int = 0, inter_op_threads: int = 0
    ) -> None:
        self.bundle = bundle
        self.labels = bundle.meta.labels
        self.encoder = bundle.encoder()
        self.session = bundle.session(intra_op_threads, inter_op_threads)

    @classmethod
    def from_path(cls, path: str | Path, intra_op_threads: int = 0) -> Predictor:
        return cls(load_bundle(path), intra_op_threads)

    def encode(self, raw: bytes) -> dict[str, np.ndarray]:
        """Preprocess one raw input (raises InputError on bad input)."""
        return self.encoder(raw)

    def run(self, encoded: list[dict[str, np.ndarray]]) -> BatchOutput:
        """Run the model on already-encoded inputs as one batch."""
        probabilities, embeddings = self.session.run(
            [PROBABILITIES, EMBEDDING], stack_inputs(encoded)
        )
        return BatchOutput(np.asarray(probabilities), np.asarray(embeddings))

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
        """Run one all-zeros input through the model and check what comes out.

        Catches a model that does not fit its own metadata (inputs, label count) before it
        serves anyone, and warms the session up.

        Raises:
            BundleError: the model's inputs or outputs do not match the bundle.
        """
        shapes = self.encoder.input_shapes()
        types = {node.name: node.type for node in self.session.get_inputs()}
        if set(types) != set(shapes):
            raise BundleError(
                f"{self.bundle.model_path} takes inputs {sorted(types)}, but the "
                f"{self.bundle.meta.modality} encoder makes {sorted(shapes)}"
            )
        dummy = {
            name: np.zeros(shape, dtype=ONNX_DTYPES.get(types[name], np.float32))
            for name, shape in shapes.items()
        }
        try:
            output = self.run([dummy])
        except Exception as exc:  # ONNX Runtime raises its own exception types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BundleError(f"{self.bundle.model_path} fails on a test input: {reason}") from None
        expected = (1, len(self.labels))
        if output.probabilities.shape != expected or output.embeddings.shape[0] != 1:
            raise BundleError(
                f"{self.bundle.model_path} returns probabilities of shape "
                f"{output.probabilities.shape}; bundle.json names {len(self.labels)} labels"
            )

    def predict(self, raws: list[bytes]) -> list[Prediction]:
        """Encode and classify raw inputs, in order."""
        return self.to_predictions(self.run([self.encode(raw) for raw in raws]).probabilities)
