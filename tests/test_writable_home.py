"""The `mlfactory` command under a read-only HOME: no library warns that it cannot write there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_no_warning_from_matplotlib_under_a_read_only_home(tmp_path: Path) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("")  # nothing can be made under it, not even by root
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    quiet = "from mlfactory.writable_home import use_writable_home_folders as u; u(); "
    for prefix, warned in (("", True), (quiet, False)):
        stderr = subprocess.run(
            [sys.executable, "-c", prefix + "import matplotlib.pyplot"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        assert ("Matplotlib" in stderr) is warned, stderr
