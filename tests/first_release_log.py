"""A prediction log as the first release wrote it (JSON embeddings; no model_run_id,
data_fingerprint, embedding_f16, ood_score or in_distribution), for the upgrade and read tests."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

FIRST_RELEASE_SCHEMA = """
CREATE TABLE predictions (
    id INTEGER NOT NULL PRIMARY KEY,
    ts DATETIME NOT NULL,
    request_id VARCHAR(64) NOT NULL,
    input_index INTEGER NOT NULL,
    model_name VARCHAR(200) NOT NULL,
    model_version VARCHAR(100) NOT NULL,
    input_summary JSON NOT NULL,
    embedding JSON NOT NULL,
    probabilities JSON NOT NULL,
    label VARCHAR(200) NOT NULL,
    score FLOAT NOT NULL,
    latency_ms FLOAT NOT NULL
)
"""


def write_first_release_log(database: Path, embedding: list[float]) -> None:
    """One row of model digits 1 (request 'old', 2026-01-01, cat 0.75 / dog 0.25)."""
    with sqlite3.connect(database) as connection:
        connection.execute(FIRST_RELEASE_SCHEMA)
        connection.execute(
            "INSERT INTO predictions (ts, request_id, input_index, model_name, model_version, "
            "input_summary, embedding, probabilities, label, score, latency_ms) VALUES "
            "('2026-01-01 00:00:00.000000', 'old', 0, 'digits', '1', '{\"bytes\": 9}', "
            "?, '{\"cat\": 0.75, \"dog\": 0.25}', 'cat', 0.75, 3.5)",
            (json.dumps(embedding),),
        )
