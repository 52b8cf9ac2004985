"""Run a bundle on raw inputs with ONNX Runtime: the one inference path of CLI, API, evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlfactory.bundle import EMBEDDING, PROBABILITIES, Bundle, load_bundle
from mlfactory.modalities import stack_inputs


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

    def predict(self, raws: list[bytes]) -> list[Prediction]:
        """Encode and classify raw inputs, in order."""
        return self.to_predictions(self.run([self.encode(raw) for raw in raws]).probabilities)
