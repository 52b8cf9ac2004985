"""Serving settings: typed, with defaults, read from `MLFACTORY_*` environment variables.

Environment variables are the one way to configure a running server (and the only place secrets
may come from), so the same settings reach every uvicorn worker process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from mlfactory.errors import ConfigError

ENV_PREFIX = "MLFACTORY_"
MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class ServingSettings:
    """Limits and runtime options of the prediction server.

    Each field is read from the environment variable `MLFACTORY_<FIELD NAME IN CAPITALS>`,
    e.g. `MLFACTORY_MAX_UPLOAD_BYTES=5242880`.
    """

    # Largest accepted file, in bytes; enforced while the upload streams in.
    max_upload_bytes: int = 10 * MEGABYTE
    # Most files (or texts) in one request; they are classified as one batch.
    max_files: int = 64
    # Longest accepted text, in characters (text bundles).
    max_text_chars: int = 10_000
    # Largest accepted request body, in bytes (all files plus multipart overhead).
    max_request_bytes: int = 100 * MEGABYTE
    # ONNX Runtime intra-op threads per worker process; 0 lets ONNX Runtime choose.
    ort_intra_op_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_files", "max_text_chars", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)}: {getattr(self, name)} must be >= 1")
        if self.ort_intra_op_threads < 0:
            raise ConfigError(
                f"{env_name('ort_intra_op_threads')}: {self.ort_intra_op_threads} must be >= 0"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Settings from environment variables; unset variables keep their defaults.

        Args:
            environ: the variables to read (default: `os.environ`).

        Raises:
            ConfigError: a variable is set to something that is not a valid integer.
        """
        source = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for spec in fields(cls):
            raw = source.get(env_name(spec.name))
            if raw is None or not raw.strip():
                continue
            try:
                values[spec.name] = int(raw.strip().replace("_", ""))
            except ValueError:
                raise ConfigError(f"{env_name(spec.name)}: '{raw}' is not an integer") from None
        return cls(**values)


def env_name(field_name: str) -> str:
    """The environment variable that sets a `ServingSettings` field."""
    return ENV_PREFIX + field_name.upper()
