"""Quiet libraries under a read-only HOME (a container's user without a home, a locked-down
account): matplotlib and ONNX Runtime write a config or cache folder there, and warn (without
-v) when they cannot. The `mlfactory` command points them at a temporary folder instead, only
when the user set none."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# variable -> the folder under HOME that the library uses when the variable is not set
HOME_FOLDERS = {
    "MPLCONFIGDIR": (".config", "matplotlib"),  # matplotlib's config and font cache
    "XDG_CACHE_HOME": (".cache",),  # ONNX Runtime's telemetry device id, among others
}


def use_writable_home_folders() -> list[str]:
    """Set each variable of HOME_FOLDERS that is unset, and whose folder under HOME cannot be
    made or written, to a temporary folder removed at exit.

    Returns:
        The variables set.
    """
    home = Path.home()
    chosen: list[str] = []
    for variable, parts in HOME_FOLDERS.items():
        if os.environ.get(variable) or _writable(home.joinpath(*parts)):
            continue
        folder = tempfile.mkdtemp(prefix=f"mlfactory-{variable.lower()}-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[variable] = folder
        chosen.append(variable)
    return chosen


def _writable(folder: Path) -> bool:
    """Whether `folder` can be written, or made in its nearest existing parent."""
    for place in (folder, *folder.parents):
        if place.exists():
            return place.is_dir() and os.access(place, os.W_OK | os.X_OK)
    return False
