"""The demo's folder: claimed before anything is written, and its run replaced only once a new
one has a bundle, so that an interrupted rerun leaves the earlier demo whole."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlfactory.errors import MlfactoryError

# Written into the demo's folder first: a later demo may replace what a folder holding it holds.
DEMO_MARK = ".mlfactory-demo"
# Where a demo trains; its files replace the earlier demo's only when its bundle exists.
NEXT_RUN = ".next-run"
# What a demo's server leaves beside the run: replaced with it.
SERVER_FILES = ("predictions.db", "predictions.db-wal", "predictions.db-shm", "server.log")


def claim_demo_folder(out: Path) -> bool:
    """Make `out` the demo's: a new or empty folder, or one an earlier demo marked with
    DEMO_MARK. Anything else is refused before anything is written: the demo replaces the run
    its folder holds, and must not replace a user's.

    Returns:
        Whether the folder was made now (a demo that fails to start removes it again).

    Raises:
        MlfactoryError: `out` is a file, holds files that no demo wrote, or cannot be made.
    """
    if out.exists() and not out.is_dir():
        raise MlfactoryError(f"--out {out} is a file: give a folder for the demo")
    if out.is_dir() and not (out / DEMO_MARK).is_file() and any(out.iterdir()):
        raise MlfactoryError(
            f"--out {out} holds files that no demo wrote, which the demo would replace: "
            "give a new or empty folder"
        )
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARK).write_text("a folder of `mlfactory demo`; the next demo replaces it\n")
    except OSError as exc:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        reason = exc.strerror or str(exc)
        raise MlfactoryError(
            f"--out {out}: cannot write the demo's folder there ({reason}): give --out a "
            "folder you can write, e.g. --out /tmp/mlfactory-demo"
        ) from None
    return made


@contextmanager
def removed_unless_finished(out: Path, made: bool) -> Iterator[None]:
    """`out`, removed again if it was `made` by this demo and the block fails or is
    interrupted: a failed first demo leaves no half-made folder behind."""
    try:
        yield
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise


def publish_next_run(out: Path) -> None:
    """Move the finished run in `out/NEXT_RUN` into `out`, in place of the earlier demo's run
    and its server's files (the store and the data cache stay)."""
    staged = out / NEXT_RUN
    for stale in SERVER_FILES:
        _remove(out / stale)
    for entry in sorted(staged.iterdir()):
        _remove(out / entry.name)
        entry.rename(out / entry.name)
    staged.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
