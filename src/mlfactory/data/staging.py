"""Build a folder in the cache once, atomically, and remember what was skipped while building it.

A folder is built under a temporary name and renamed into place only when complete, so an
interrupted run never leaves a half-built folder that a later run would trust. Builds of one
folder hold a lock (`flock` on a file beside it), so two runs sharing a fresh cache build it
once. A run that uses a folder holds a shared lock on a second file beside it until the
process ends (training reads the items' files until its last epoch): `--refresh` and
`remove_stale` never delete a folder another run reads; a refresh says so, `remove_stale`
leaves the folder for a later run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from mlfactory.errors import DataError

logger = logging.getLogger(__name__)

MARKER = ".complete.json"


def build_once(
    dest: Path, build: Callable[[Path], list[dict[str, str]]], refresh: bool = False
) -> list[dict[str, str]]:
    """Run `build(tmp_dir)` unless `dest` is already complete, then move the result to `dest`;
    either way, hold `dest` for reading until the process ends (`hold_for_reading`).

    A run that waited for another one building `dest` uses that build, even with `refresh`
    (it is newer than the request).

    Args:
        dest: the folder to create.
        build: fills the folder it is given; returns the entries it skipped.
        refresh: rebuild even when `dest` is complete.

    Returns:
        The skipped entries recorded when the folder was built.

    Raises:
        DataError: `refresh`, and another run reads `dest`.
    """
    marker = dest / MARKER
    dest.parent.mkdir(parents=True, exist_ok=True)
    if marker.is_file() and not refresh:
        hold_for_reading(dest)
        return _recorded(marker)
    asked = time.time()
    with _build_lock(dest):
        if marker.is_file() and (not refresh or marker.stat().st_mtime >= asked):
            skipped = _recorded(marker)
        elif dest.exists():
            with _unread(dest, refused=_refresh_refused):
                skipped = _build(dest, build)
        else:
            skipped = _build(dest, build)
        hold_for_reading(dest)
    return skipped


def _build(dest: Path, build: Callable[[Path], list[dict[str, str]]]) -> list[dict[str, str]]:
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir()
        skipped = build(tmp)
        (tmp / MARKER).write_text(json.dumps({"skipped": skipped}))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return skipped


def _refresh_refused(dest: Path) -> DataError:
    return DataError(
        f"--refresh: another run reads the cache folder {dest} (a data, train or sweep run "
        "started before this one, training until it ends, or a Python session that prepared "
        "it): refresh once it has ended, or give this run another data.cache_dir"
    )


def is_built(dest: Path) -> bool:
    """Whether `dest` is a complete folder that `build_once` built."""
    return (dest / MARKER).is_file()


def _recorded(marker: Path) -> list[dict[str, str]]:
    return list(json.loads(marker.read_text())["skipped"])


@contextlib.contextmanager
def _build_lock(dest: Path) -> Iterator[None]:
    """Hold `.<dest name>.lock` beside `dest`, waiting for a run that builds it now.

    The lock (`flock`) goes with the process, even a killed one: no stale lock blocks a
    later run.
    """
    with open(_build_lock_file(dest), "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def remove_stale(dest: Path, prefix: str) -> None:
    """Delete sibling folders of `dest` named `prefix*`, older builds of the same source,
    except those another run reads (a later run removes them)."""
    if not dest.parent.is_dir():
        return
    for sibling in dest.parent.iterdir():
        if sibling.name.startswith(prefix) and sibling != dest and sibling.is_dir():
            try:
                with _unread(sibling, refused=DataError):
                    logger.info("removing stale cache folder %s", sibling)
                    shutil.rmtree(sibling, ignore_errors=True)
                    for lock in (_readers_file(sibling), _build_lock_file(sibling)):
                        lock.unlink(missing_ok=True)
            except DataError:
                logger.info("stale cache folder %s kept: another run reads it", sibling)


# The shared locks this process holds on the folders it reads, by folder (see the docstring).
_reading: dict[Path, IO[str]] = {}


def hold_for_reading(dest: Path) -> None:
    """Hold a shared lock on `.<dest name>.readers` beside `dest` until the process ends, so
    that no other run replaces or removes `dest` while this one reads its files. It waits
    while another run replaces `dest` (`--refresh`)."""
    if dest in _reading:
        return
    handle = open(_readers_file(dest), "a+", encoding="utf-8")  # noqa: SIM115 (held)
    fcntl.flock(handle, fcntl.LOCK_SH)
    _reading[dest] = handle


@contextlib.contextmanager
def _unread(dest: Path, refused: Callable[[Path], Exception]) -> Iterator[None]:
    """Hold `dest` alone (no other run reads it) while replacing or removing it; this
    process's own shared lock on it is given up first.

    Raises:
        the exception `refused(dest)` makes: another run holds it for reading.
    """
    mine = _reading.pop(dest, None)
    if mine is not None:
        mine.close()
    with open(_readers_file(dest), "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refused(dest) from None
        yield


def _build_lock_file(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.lock"


def _readers_file(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.readers"
