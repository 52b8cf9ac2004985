"""What the CLI prints: one line per phase, and no known third-party noise unless `-v`.

Phase lines go through the `mlfactory.phase` logger, so library code reports its steps the same
way whether the CLI, a test or a notebook runs it; the CLI prints them as bare lines on stderr.
The quiet default silences only what is known to be harmless (Lightning's adverts and hardware
lines, MLflow's store set-up, a torch deprecation inside Lightning, ONNX tracer warnings on our
graph, the Hugging Face loading bars); every other warning still shows, once. `-v` shows
everything, each line once.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PHASE_LOGGER = "mlfactory.phase"
phase_log = logging.getLogger(PHASE_LOGGER)

# Loggers that print lines a user cannot act on, and the lowest level still shown from them.
QUIET_LOGGERS = {
    "lightning.pytorch.loggers.mlflow": logging.ERROR,  # "Experiment ... not found. Creating it"
    "lightning": logging.WARNING,  # "GPU available: False", the litlogger tip, "fit stopped"
    "mlflow": logging.WARNING,  # "Creating initial MLflow database tables..."
    "alembic": logging.WARNING,
    "urllib3": logging.ERROR,  # "Retrying (Retry(total=...))": the error that follows says it
    "transformers": logging.ERROR,
    "huggingface_hub": logging.ERROR,
    # "Could not determine bucket type ..., falling back to GCSFileSystem", once per file read
    # from a GCS remote whose storage-layout API it cannot call (an emulator, a read-only role);
    # a refused request's traceback, logged before it is raised: the error that follows says it.
    "gcsfs": logging.CRITICAL,
}
# Lightning's package loggers: they may have stderr handlers of their own (adopt_library_loggers).
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
# Loggers with a stderr handler of their own, which the root handler's filter never sees: quieted
# by their level instead. torch's "Terminating process N via signal SIGTERM" when a rank of
# ddp_spawn fails and the others are stopped: the one-line error that follows says why.
OWN_HANDLER_LOGGERS = {"torch.multiprocessing.spawn": logging.ERROR}
# Warnings that are known to be harmless here, by message (regular expressions).
HARMLESS_WARNINGS = (
    r".*LeafSpec.*is deprecated",  # torch deprecation triggered inside Lightning
    r".*does not have many workers",  # trainer.num_workers is the user's choice
    r".*might cause the trace to be incorrect",  # ONNX export tracing our static graph
    r".*might not generalize to other inputs",
    r".*registered as constants in the trace",
    # torch.onnx on the text encoder's gather; the export's parity check proves the result.
    r".*Exporting aten::index operator of advanced indexing",
    r".*The `srun` command is available",
    r".*Checkpoint directory .* exists and is not empty",  # --resume continues in it
    r".*module\(s\) in eval mode at the start of training",  # a frozen backbone, on purpose
)
# MLflow's "Downloading artifacts" bar of a run id or a `models:/` URI (`quiet_downloads`).
MLFLOW_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# Environment read by libraries at import time: progress bars and advisory warnings off.
QUIET_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    MLFLOW_PROGRESS_ENV: "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class _PhaseHandler(logging.Handler):
    """Prints phase messages as bare lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(record.getMessage() + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is now (a test runner may swap it between commands)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _QuietFilter(logging.Filter):
    """Drops records of `QUIET_LOGGERS` below their level, however the library set its own, and
    any library's record of a Ctrl-C or SIGTERM passing through it (SQLAlchemy logs one at
    ERROR with its traceback when it lands while a pooled connection is reset): the command
    says in its own line that it stopped.

    A filter on the root handler, not logger levels: Lightning and MLflow set their loggers'
    levels when imported, which happens after the CLI starts.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyboardInterrupt | SystemExit):
            return False  # a library's traceback of the Ctrl-C or SIGTERM the command reports
        for name, level in QUIET_LOGGERS.items():
            if record.name == name or record.name.startswith(name + "."):
                return record.levelno >= level
        return True


# `verbose` of this process's last `configure_output` (None: never called, a library user).
_verbose: bool | None = None


def configured_verbosity() -> bool | None:
    """`verbose` of the last `configure_output` in this process, None if it never ran."""
    return _verbose


def configure_output(verbose: bool) -> None:
    """Set up logging and warnings for a CLI command (call before heavy imports).

    Lightning adds its own stderr handler only when the root logger has none; the root handler
    added here therefore prints each of its lines once.

    Args:
        verbose: show every log line and warning (each once) instead of the quiet default.
    """
    global _verbose
    _verbose = verbose
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "mlfactory", False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.mlfactory = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for old in [f for f in handler.filters if isinstance(f, _QuietFilter)]:
        handler.removeFilter(old)
    if not any(isinstance(h, _PhaseHandler) for h in phase_log.handlers):
        phase_log.addHandler(_PhaseHandler())
    phase_log.setLevel(logging.INFO)
    phase_log.propagate = False
    for name, level in OWN_HANDLER_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else level)
    if verbose:
        warnings.simplefilter("default")
        return
    handler.addFilter(_QuietFilter())
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """MLflow's "Downloading artifacts" bar off within, for every command that fetches a bundle
    (`registry`), whether or not it called `configure_output`: shown on stderr even when it is
    no terminal. Kept with `-v` and where the user set `MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`;
    the environment is as it was on exit."""
    if _verbose or MLFLOW_PROGRESS_ENV in os.environ:
        yield
        return
    os.environ[MLFLOW_PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(MLFLOW_PROGRESS_ENV, None)


class _SaidBefore(logging.Filter):
    """Drops a phase line that starts with one of `prefixes` and was said before, word for word."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        line = record.getMessage()
        if not line.startswith(self.prefixes):
            return True
        if line in self.said:
            return False
        self.said.add(line)
        return True


@contextmanager
def said_once(*prefixes: str) -> Iterator[None]:
    """Within, a phase line starting with one of `prefixes` prints only the first time it is
    said: a sweep's trials on the same data report it once (with `-v`, every time)."""
    if _verbose:
        yield
        return
    once = _SaidBefore(prefixes)
    phase_log.addFilter(once)
    try:
        yield
    finally:
        phase_log.removeFilter(once)


def adopt_library_loggers() -> None:
    """Route Lightning's log lines through the root handler, so each prints once (and quietly).

    Importing `lightning` gives its package logger a stderr handler of its own, and the same
    lines also propagate to the root handler: printed twice, and past the quiet filter. Call
    this after importing Lightning; it does nothing when no root handler is set up (a library
    user then keeps Lightning's own output). Imported before the root handler was (in a rank
    that ddp_spawn starts), `lightning.pytorch` and `lightning.fabric` have handlers of their
    own too, and do not propagate: they are routed the same way.
    """
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
