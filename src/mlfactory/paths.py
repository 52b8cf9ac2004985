"""Where one path lies against another, links resolved: the check every command runs before it
writes a file that could land inside what it reads (a bundle, an input store, the prediction
log)."""

from __future__ import annotations

from pathlib import Path


def is_within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies inside it, after resolving links on both."""
    return path.resolve().is_relative_to(folder.resolve())


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path, a symbolic link or a hard link."""
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and a.samefile(b)
