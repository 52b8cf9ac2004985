"""A file replaced the way tools that keep modification times replace it: the same name, size
and mtime, other content. `cp -p` writes over the file (its inode kept) and sets its mtime back;
`mv` puts another file, whose mtime was set to the old one, in its place (another inode)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

CLOCK_WAIT_S = 10.0


def replace_keeping_size_and_mtime(victim: Path, data: bytes, how: str, scratch: Path) -> None:
    """Put `data` (as long as `victim`) in `victim` with the real `cp -p` or `mv`, from a file
    written in `scratch` (outside the tree being signed) with `victim`'s times."""
    old = victim.stat()
    assert len(data) == old.st_size, "a replacement of the same size"
    scratch.mkdir(parents=True, exist_ok=True)
    new = scratch / victim.name
    new.write_bytes(data)
    os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
    _after_the_clock_passes(old.st_ctime_ns, scratch)
    command = ["cp", "-p"] if how == "cp -p" else ["mv"]
    subprocess.run([*command, str(new), str(victim)], check=True, timeout=60)
    now = victim.stat()
    assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert (now.st_ino == old.st_ino) is (how == "cp -p")
    assert victim.read_bytes() == data


def _after_the_clock_passes(ctime_ns: int, scratch: Path) -> None:
    """Return once the file system stamps a change later than `ctime_ns`. It takes times from
    a clock that moves every few milliseconds: a file written and then replaced by `cp -p`
    within one tick (by a test, faster than a person or a tool replaces data) keeps its ctime
    too, and nothing `stat` says tells the change (what Git calls "racily clean")."""
    probe = scratch / ".clock"
    deadline = time.monotonic() + CLOCK_WAIT_S
    while time.monotonic() < deadline:
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns > ctime_ns:
            probe.unlink()
            return
    raise AssertionError(f"the file system's clock did not move in {CLOCK_WAIT_S} s")
