"""The raw inputs of live traffic, kept to retrain on (`MLFACTORY_INPUT_STORE`, off by default).

The prediction log keeps a summary of each input, never the input itself. With a store folder
set, the server also keeps every predicted input exactly as it arrived (the uploaded file's
bytes; a text as UTF-8), before it answers: an input that cannot be kept is answered 503 and
not logged, like one the log cannot store. Each input is a file named by the SHA-256 of its
bytes, `<store>/<first 2 hex digits>/<64 hex digits>`, which the log row holds as
`input_sha256`: the same input sent twice is one file, and the feedback labels of the log
join the files to their true labels (docs/serving.md, "Keeping the inputs").

The prediction log's writer thread keeps a request's inputs just before it commits the
request's rows (`PredictionLog.write(rows, before_commit=...)`): no thread hop of its own per
request, which cost a saturated server far more than the writing (docs/benchmarks.md, "What
keeping the inputs costs"). A file is written under a temporary name and renamed, so a reader
never sees half an input while the server runs. It is as durable as the log's rows on SQLite
(`synchronous=NORMAL`): in the operating system's page cache once written, so it survives the
server process dying in any way, and only a crash of the whole machine can lose the last
inputs, or leave one cut short. There is no fsync per input: on the development machine it
made keeping a new input take 6 times as long and 3 times the CPU. A file cut short is written
again when its input is sent again, and `read` checks that a file's bytes still hash to its
name, so a damaged one is never taken for an input. Sending an input again refreshes its file's
time, and the log's retention (`MLFACTORY_LOG_RETENTION`) deletes the files not sent for longer
than the period, as it deletes the rows. Several workers, or servers, may share one store.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlfactory.errors import ConfigError


def input_digest(raw: bytes) -> str:
    """The name of an input in the store (and `input_sha256` in the log): its SHA-256."""
    return hashlib.sha256(raw).hexdigest()


class DamagedInput(Exception):
    """A file of the store whose bytes no longer hash to its name."""


class InputStore:
    """A folder of raw inputs named by their SHA-256 (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def open(cls, folder: str) -> InputStore:
        """The store in `folder`, created if needed and checked to be writable.

        Raises:
            ConfigError: the folder cannot be created or written.
        """
        path = Path(folder).expanduser()
        probe = path / f".probe-{os.getpid()}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"MLFACTORY_INPUT_STORE: cannot write to {path}: {exc.strerror or exc}"
            ) from None
        return cls(path)

    def path(self, digest: str) -> Path:
        """Where the input of SHA-256 `digest` is kept."""
        return self.folder / digest[:2] / digest

    def keep(self, raws: Sequence[bytes], digests: Sequence[str]) -> None:
        """Keep each input (blocking: the log's writer thread calls it); one already kept gets a
        new time, and is written again if its file is not its size (cut short by a crash).

        Raises:
            OSError: an input could not be written (disk full, folder gone, ...).
        """
        for raw, digest in zip(raws, digests, strict=True):
            target = self.path(digest)
            try:
                if os.stat(target).st_size == len(raw):
                    os.utime(target)  # kept before: only its time changes
                    continue
            except FileNotFoundError:
                pass
            target.parent.mkdir(exist_ok=True)
            partial = target.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}")
            partial.write_bytes(raw)
            os.replace(partial, target)

    def read(self, digest: str) -> bytes | None:
        """The input of SHA-256 `digest`; None when the store does not hold it.

        Raises:
            DamagedInput: the file's bytes do not hash to its name (cut short by a crash of
                the machine while it was written, or changed since).
        """
        try:
            raw = self.path(digest).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        if input_digest(raw) != digest:
            raise DamagedInput(f"{self.path(digest)}: its bytes do not hash to its name")
        return raw

    def prune(self, older_than: timedelta, now: datetime | None = None) -> int:
        """Delete the inputs not sent for longer than `older_than`; returns how many."""
        cutoff = ((now or datetime.now(UTC)) - older_than).timestamp()
        deleted = 0
        for shard in self.folder.iterdir():
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for kept in shard.iterdir():
                try:
                    if kept.stat().st_mtime < cutoff:
                        kept.unlink()
                        deleted += 1
                except FileNotFoundError:  # pruned by another worker meanwhile
                    continue
        return deleted
