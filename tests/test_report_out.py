"""Where `mlfactory report --out` writes: an `.html` file, outside every bundle, and a disk
that cannot take it is one line naming the file. Tiny real bundles (real ONNX models)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app

from .serving.tiny_bundles import tiny_bundle
from .test_cli import assert_one_line_error

runner = CliRunner()


def test_report_out_is_html_and_never_inside_another_bundle(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "runA" / "bundle", "image")
    other = tmp_path / "runA_copy" / "bundle"
    shutil.copytree(bundle, other)
    before = {path: path.read_bytes() for path in other.rglob("*") if path.is_file()}
    cases = {
        other / "model.onnx": f"--out {other / 'model.onnx'}: a report is HTML: give a .html",
        other / "card.html": f"--out {other / 'card.html'} is inside the bundle {other}",
        other / "sub" / "card.html": f"is inside the bundle {other}",
        tmp_path / "card.txt": "a report is HTML",
    }
    for out, message in cases.items():
        result = runner.invoke(app, ["report", str(bundle), "--out", str(out)])
        assert_one_line_error(result, message)
    assert {path: path.read_bytes() for path in other.rglob("*") if path.is_file()} == before
    assert not (tmp_path / "card.txt").exists()
    done = runner.invoke(app, ["report", str(bundle), "--out", str(tmp_path / "card.html")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "card.html").read_text().startswith("<!DOCTYPE html>")


def test_report_on_a_full_disk_names_the_file(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    bundle = tiny_bundle(tmp_path / "bundle", "image")
    out = tmp_path / "full.html"
    out.symlink_to("/dev/full")
    result = runner.invoke(app, ["report", str(bundle), "--out", str(out)])
    assert_one_line_error(result, f"--out {out}: cannot write it: No space left on device")
