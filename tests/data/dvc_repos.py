"""Git and DVC as a user runs them (subprocesses, no analytics), and DVC's site cache kept out
of /var/tmp: `from tests.data.dvc_repos import dvc, dvc_site_cache, git  # noqa: F401`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import untraced_env


def run(*command: str, cwd: Path) -> str:
    env = untraced_env({"DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"})
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def git(*args: str, cwd: Path) -> str:
    return run("git", "-c", "user.name=t", "-c", "user.email=t@t", *args, cwd=cwd)


def dvc(*args: str, cwd: Path) -> str:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.fixture(scope="module", autouse=True)
def dvc_site_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """DVC's site cache in a temporary folder, not /var/tmp/dvc."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path_factory.mktemp("dvc-site-cache")))
        yield
