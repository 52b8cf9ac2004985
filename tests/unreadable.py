"""A folder or a file the process may not read, without file modes: the tests run as root, which
reads a mode-000 file anyway. The exact call that fails for a user without the permission raises
`PermissionError` (EACCES, as the kernel's) for that one path; every other path is untouched."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest


def _denied(path: str | os.PathLike[str]) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))


def deny_listing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """`os.scandir(folder)` fails, as for a folder of mode 000 (`os.walk` and `shutil.copytree`
    list folders with it)."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if not isinstance(path, int) and Path(os.fsdecode(path)).absolute() == folder.absolute():
            raise _denied(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def deny_copying(monkeypatch: pytest.MonkeyPatch, file: Path) -> None:
    """`shutil` cannot open `file` to read it, as for a file of mode 000: what `shutil.copyfile`
    (`copy2`, `copytree`) meets first."""
    real = open

    def opener(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "r" in mode and Path(os.fsdecode(path)).absolute() == file.absolute():
            raise _denied(path)
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(shutil, "open", opener, raising=False)
