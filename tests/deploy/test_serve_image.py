"""docker/serve.Dockerfile's build-time bundle check, run here as the build runs it, against a
real tiny bundle and against the placeholder CI used to build around (no Docker needed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.serving.tiny_bundles import tiny_bundle

from .tools import ROOT

SERVE_DOCKERFILE = ROOT / "docker" / "serve.Dockerfile"


def bundle_check_script() -> str:
    """The Python the Dockerfile runs on /bundle (its `python - <<'CHECK'` heredoc)."""
    found = re.search(
        r"RUN python - <<'CHECK'.*?\n(.*?)\nCHECK\n", SERVE_DOCKERFILE.read_text(), re.S
    )
    assert found, "serve.Dockerfile no longer checks the bundle with a CHECK heredoc"
    return found.group(1)


def run_check(bundle: Path) -> subprocess.CompletedProcess[str]:
    script = bundle_check_script().replace('Path("/bundle")', f"Path({str(bundle)!r})")
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_real_bundle_passes_the_build_check(tmp_path: Path) -> None:
    result = run_check(tiny_bundle(tmp_path / "bundle", "image"))
    assert result.returncode == 0, result.stderr


def test_a_placeholder_bundle_fails_the_build_in_one_line(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")  # what CI's placeholder was: both files exist
    (bundle / "model.onnx").touch()
    result = run_check(bundle)
    assert result.returncode == 1
    assert result.stderr.startswith("error: BUNDLE is no bundle that serves: ")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_model_that_does_not_load_fails_the_build(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", "image")
    (bundle / "model.onnx").write_bytes(b"not an onnx graph")
    json.loads((bundle / "bundle.json").read_text())  # the metadata itself is fine
    result = run_check(bundle)
    assert result.returncode == 1
    assert result.stderr.startswith("error: BUNDLE is no bundle that serves: "), result.stderr
