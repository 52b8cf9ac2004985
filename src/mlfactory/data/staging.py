"""Build a folder in the cache once, atomically, and remember what was skipped while building it.

A folder is built under a temporary name and renamed into place only when complete, so an
interrupted run never leaves a half-built folder that a later run would trust. Builds of one
folder hold a lock (`flock` on a file beside it), so two runs sharing a fresh cache build it
once, and neither deletes a folder the other is reading.
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

logger = logging.getLogger(__name__)

MARKER = ".complete.json"


def build_once(
    dest: Path, build: Callable[[Path], list[dict[str, str]]], refresh: bool = False
) -> list[dict[str, str]]:
    """Run `build(tmp_dir)` unless `dest` is already complete, then move the result to `dest`.

    A run that waited for another one building `dest` uses that build, even with `refresh`
    (it is newer than the request).

    Args:
        dest: the folder to create.
        build: fills the folder it is given; returns the entries it skipped.
        refresh: rebuild even when `dest` is complete.

    Returns:
        The skipped entries recorded when the folder was built.
    """
    marker = dest / MARKER
    if marker.is_file() and not refresh:
        return _recorded(marker)
    asked = time.time()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(dest):
        if marker.is_file() and (not refresh or marker.stat().st_mtime >= asked):
            return _recorded(marker)
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
    with open(dest.parent / f".{dest.name}.lock", "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def remove_stale(dest: Path, prefix: str) -> None:
    """Delete sibling folders of `dest` named `prefix*`: older builds of the same source."""
    if not dest.parent.is_dir():
        return
    for sibling in dest.parent.iterdir():
        if sibling.name.startswith(prefix) and sibling != dest and sibling.is_dir():
            logger.info("removing stale cache folder %s", sibling)
            shutil.rmtree(sibling, ignore_errors=True)
