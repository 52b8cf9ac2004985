"""The tables of the prediction log, and how an embedding is stored in a row.

`predictions` holds one row per answered input; `feedback` the true label that a client sent
back later for one of them (see `feedback`); `chosen_request_ids` the ids that clients chose
(see `taken_ids`). Columns added after the first release are
nullable, so `log_database.upgrade_schema` can add them to an existing log (old rows read
them as NULL).

An embedding is stored as little-endian float16 bytes in `embedding_f16` (2 bytes a value:
2,560 bytes for a 1,280-wide embedding, against ~13 KB as JSON text). Rows written before that
column existed keep their embedding as a JSON list in `embedding`; new rows write `[]` there
(the column is NOT NULL in existing logs). `decode_embedding` reads either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from mlfactory.bundle import MAX_ID_CHARS, MAX_LABEL_CHARS, MAX_NAME_CHARS, MAX_VERSION_CHARS

# The longest request id the log's columns hold (`request_ids.VALID_REQUEST_ID` allows no more).
MAX_REQUEST_ID_CHARS = 64
# float16 holds values up to 65504; larger ones are clipped rather than stored as infinity.
EMBEDDING_DTYPE = np.dtype("<f2")
EMBEDDING_MAX = float(np.finfo(np.float16).max)

metadata = MetaData()
predictions = Table(
    "predictions",
    metadata,
    # SQLite auto-increments only an INTEGER PRIMARY KEY; elsewhere the log may outgrow 2**31.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String(MAX_REQUEST_ID_CHARS), nullable=False, index=True),
    Column("input_index", Integer, nullable=False),
    Column("model_name", String(MAX_NAME_CHARS), nullable=False),
    Column("model_version", String(MAX_VERSION_CHARS), nullable=False),
    # Added later: nullable, so `upgrade_schema` can add them to an existing log.
    Column("model_run_id", String(MAX_ID_CHARS), nullable=True),
    Column("data_fingerprint", String(MAX_ID_CHARS), nullable=True),
    Column("input_summary", JSON, nullable=False),
    Column("embedding", JSON, nullable=False),  # `[]` in rows that have `embedding_f16`
    Column("probabilities", JSON, nullable=False),
    Column("label", String(MAX_LABEL_CHARS), nullable=False),
    Column("score", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("embedding_f16", LargeBinary, nullable=True),
    Column("ood_score", Float, nullable=True),
    Column("in_distribution", Boolean, nullable=True),
    # the fingerprint of the profile's scorer that gave `ood_score` (`OodScorer.fingerprint`):
    # a profile written again for the same bundle (`mlfactory profile`) scores otherwise
    Column("ood_scorer", String(64), nullable=True),
    # the SHA-256 of the input's bytes: its file in the input store (`input_store`), if kept
    Column("input_sha256", String(64), nullable=True),
    # the X-Request-ID the client sent (NULL: none, or one that is no request id). The row's
    # `request_id` is the same, unless an earlier request had taken it (then a new one): one
    # request id never names two requests. Feedback checks the namesakes (`feedback`).
    Column("requested_id", String(MAX_REQUEST_ID_CHARS), nullable=True, index=True),
    # A window is one model version's last rows: without this index a log shared with a busier
    # model is scanned back through all of its rows (measured in docs/monitoring.md).
    Index("ix_predictions_model_version_id", "model_name", "model_version", "id"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("request_id", String(MAX_REQUEST_ID_CHARS), nullable=False),
    Column("input_index", Integer, nullable=False),
    Column("label", String(MAX_LABEL_CHARS), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    UniqueConstraint("request_id", "input_index", name="feedback_input"),
)

# Each request id a client chose and a request kept, once: the writer claims it in the
# transaction that logs the request, so that two workers or replicas committing the same id at
# once cannot both keep it (`taken_ids`). Pruned with the predictions (`log_retention`).
chosen_request_ids = Table(
    "chosen_request_ids",
    metadata,
    Column("request_id", String(MAX_REQUEST_ID_CHARS), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
)


def encode_embedding(embedding: Any) -> bytes:
    """An embedding as float16 bytes (values beyond float16's range clipped to it)."""
    values = np.clip(np.asarray(embedding, dtype=np.float32), -EMBEDDING_MAX, EMBEDDING_MAX)
    return values.astype(EMBEDDING_DTYPE).tobytes()


def decode_embedding(binary: bytes | None, values: Any) -> np.ndarray:
    """A stored embedding as float32: from its bytes, or from the JSON list of an older row."""
    if binary is not None:
        return np.frombuffer(binary, dtype=EMBEDDING_DTYPE).astype(np.float32)
    return np.asarray(values or [], dtype=np.float32)
