"""What the server would log for each input of a pool: embedding, probabilities, input summary.

Inputs go through the bundle's own encoder and ONNX Runtime session (`Predictor`) and the
serving input summary, exactly as `POST /v1/predict` runs them. Results are cached on disk per
bundle and pool (npz + json; the key covers the pool's inputs and the bundle's model), so reruns
of the benchmark skip the model.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.pools import Pool

from mlfactory.monitoring.reference import model_outputs
from mlfactory.monitoring.report import Window
from mlfactory.predictor import Predictor


@dataclass
class Outputs:
    """The logged view of a pool: one row per input that the model accepted."""

    name: str
    embeddings: np.ndarray
    probabilities: np.ndarray
    summaries: list[dict[str, Any]]
    labels: list[str | None]
    # (N, E) the model's early features (a convolutional model's), else None.
    early: np.ndarray | None = None
    # (N,) the OOD scores the server logs (set once the profile exists), else None.
    ood_scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.probabilities)

    def rows(self, index: np.ndarray) -> Outputs:
        """The rows at `index`, in that order."""
        return Outputs(
            self.name,
            self.embeddings[index],
            self.probabilities[index],
            [self.summaries[i] for i in index],
            [self.labels[i] for i in index],
            None if self.early is None else self.early[index],
            None if self.ood_scores is None else self.ood_scores[index],
        )

    def logged(self) -> Window:
        """The rows as the server's log holds them: what `check_window` reads (no timestamps,
        labels or latencies)."""
        return Window(
            self.embeddings, self.probabilities, self.summaries, ood_scores=self.ood_scores
        )


def pool_outputs(predictor: Predictor, pool: Pool, cache: Path) -> Outputs:
    """Run (or read from `cache`) every input of the pool through the bundle."""
    digest = hashlib.sha256(predictor.bundle.model_path.read_bytes())
    for raw in pool.raws:
        digest.update(hashlib.sha256(raw).digest())
    slug = re.sub(r"[^A-Za-z0-9]+", "-", pool.name).strip("-")
    path = cache / f"{slug}-{digest.hexdigest()[:16]}"
    if path.with_suffix(".npz").is_file():
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(path.with_suffix(".json").read_text())
        return Outputs(
            pool.name,
            arrays["embeddings"],
            arrays["probabilities"],
            meta["summaries"],
            meta["labels"],
            arrays.get("early"),
        )
    outputs = _run(predictor, pool)
    cache.mkdir(parents=True, exist_ok=True)
    early = {} if outputs.early is None else {"early": outputs.early}
    np.savez(
        path.with_suffix(".npz"),
        embeddings=outputs.embeddings,
        probabilities=outputs.probabilities,
        **early,
    )
    path.with_suffix(".json").write_text(
        json.dumps({"summaries": outputs.summaries, "labels": outputs.labels})
    )
    return outputs


def _run(predictor: Predictor, pool: Pool) -> Outputs:
    embeddings, probabilities, summaries, labels, early = model_outputs(
        predictor, pool.raws, pool.labels
    )
    refused = len(pool.raws) - len(labels)
    if refused:
        print(f"  {pool.name}: the bundle refused {refused} of {len(pool.raws)} inputs")
    return Outputs(
        pool.name,
        embeddings.astype(np.float32),
        probabilities.astype(np.float32),
        summaries,
        labels,
        None if early is None else early.astype(np.float32),
    )
