"""Bytes a prediction-log row takes on SQLite, with the embedding stored as float16 bytes.

Writes 2,000 rows through `PredictionLog` (10 labels, an image input summary, a ReLU-like
embedding of 1,280 and of 384 values) and prints the database file's size per row, the stored
embedding's size and what the same embedding would take as JSON text (6 decimals).

    python benchmarks/monitoring/log_row_size.py
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile

import numpy as np

from mlfactory.serving.prediction_log import LoggedPrediction, PredictionLog

ROWS = 2000
LABELS = [str(digit) for digit in range(10)]
SUMMARY = {
    "bytes": 700,
    "width": 28,
    "height": 28,
    "format": "PNG",
    "brightness_mean": 0.1312,
    "brightness_std": 0.3077,
}


def measure(dim: int, rng: np.random.Generator) -> dict[str, float]:
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "predictions.db")
    log = PredictionLog(f"sqlite:///{path}")
    log.start()
    rows, embedding = [], np.zeros(dim, np.float32)
    for i in range(ROWS):
        probabilities = rng.dirichlet(np.ones(len(LABELS)))
        embedding = np.maximum(rng.normal(0.0, 1.0, dim), 0.0).astype(np.float32)
        rows.append(
            LoggedPrediction(
                request_id=f"{i:032x}",
                input_index=0,
                model_name="digits",
                model_version="1",
                input_summary=SUMMARY,
                embedding=embedding,
                probabilities={k: float(v) for k, v in zip(LABELS, probabilities, strict=True)},
                label="3",
                score=float(probabilities.max()),
                latency_ms=12.345,
                ood_score=1.0123,
                in_distribution=True,
            )
        )
    log.submit(rows).result()
    log.close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (stored,) = connection.execute(
            "select avg(length(embedding_f16)) from predictions"
        ).fetchone()
    return {
        "dim": dim,
        "file_bytes_per_row": os.path.getsize(path) / ROWS,
        "embedding_bytes": stored,
        "json_embedding_bytes": len(json.dumps([round(float(v), 6) for v in embedding])),
    }


def main() -> None:
    rng = np.random.default_rng(0)
    for dim in (1280, 384):
        print(measure(dim, rng))


if __name__ == "__main__":
    main()
