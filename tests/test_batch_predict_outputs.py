"""`mlfactory predict` at its edges: names that are not UTF-8, tables that break part-way or
cannot be used inside a folder, a full disk, a closed stdout. Real MNIST digits and real
Reuters articles through tiny real bundles."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlfactory.cli import app

from .test_batch_predict import REUTERS, image_bundle, runner, text_bundle
from .test_cli import assert_one_line_error

__all__ = ["image_bundle", "text_bundle"]  # test_batch_predict's fixtures: tiny real bundles


def _texts(count: int) -> list[str]:
    """`count` texts cut from the real articles (their starts, in turn)."""
    articles = [json.loads(line)["text"] for line in REUTERS.read_text().splitlines()]
    return [articles[i % len(articles)][:60] for i in range(count)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_name_that_is_not_utf8_is_written_escaped_and_the_rest_kept(
    image_bundle: Path, digit_folder: Path, tmp_path: Path, suffix: str
) -> None:
    folder = tmp_path / "badn"
    folder.mkdir()
    digits = sorted((digit_folder / "3").glob("*.png"))
    shutil.copyfile(digits[0], folder / os.fsdecode(b"bad\xffname.png"))
    shutil.copyfile(digits[1], folder / "ok.png")
    out = tmp_path / f"badn{suffix}"
    result = runner.invoke(app, ["predict", str(image_bundle), str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    if suffix == ".csv":
        with out.open(newline="", encoding="utf-8") as handle:
            inputs = [row["input"] for row in csv.DictReader(handle)]
    else:
        inputs = [json.loads(line)["input"] for line in out.read_text("utf-8").splitlines()]
    assert inputs == [f"{folder}/bad\\xffname.png", f"{folder}/ok.png"]
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    again = runner.invoke(app, ["predict", str(image_bundle), str(folder), "-o", str(out)])
    assert again.exit_code == 1, again.output
    assert f"skipped {folder}/caf\\xe9.png: " in again.output


def test_a_table_that_breaks_late_predicts_every_row_before_it(
    text_bundle: Path, tmp_path: Path
) -> None:
    texts = _texts(3000)
    head = "\n".join(["text", *(t.replace(",", " ").replace('"', " ") for t in texts)]) + "\n"
    table = tmp_path / "late.csv"
    table.write_bytes(head.encode() + "un café\n".encode("latin-1") + b"more wheat\n")
    offset = len(head.encode()) + len("un caf")
    out = tmp_path / "late.jsonl"
    result = runner.invoke(app, ["predict", str(text_bundle), str(table), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert len(out.read_text().splitlines()) == 3000
    assert f"byte 0xe9 at offset {offset} is not UTF-8 (line 3002)" in result.output
    assert "predicted 3000 input(s); skipped 1" in result.output


def test_an_unusable_table_in_a_folder_is_skipped_and_an_old_output_refused(
    text_bundle: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "tin"
    folder.mkdir()
    shutil.copyfile(REUTERS, folder / "news.jsonl")
    (folder / "semi.csv").write_text("text;label\n" + "".join(f"{t};x\n" for t in _texts(3)))
    out = folder / "out.csv"
    result = runner.invoke(app, ["predict", str(text_bundle), str(folder), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert f"skipped {folder / 'semi.csv'}: column 'text' not found" in result.output
    assert "predicted 36 input(s); skipped 1" in result.output
    kept = out.read_bytes()
    again = runner.invoke(app, ["predict", str(text_bundle), str(folder), "-o", str(out)])
    assert_one_line_error(again, f"--output {out} is the input {out}")
    assert out.read_bytes() == kept
    named = runner.invoke(app, ["predict", str(text_bundle), str(folder / "semi.csv")])
    assert_one_line_error(named, "column 'text' not found")


def test_a_full_disk_names_the_results_file(text_bundle: Path, tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    for name in ("full.csv", "full.jsonl"):
        out = tmp_path / name
        out.symlink_to("/dev/full")
        result = runner.invoke(app, ["predict", str(text_bundle), "--text", "oil", "-o", str(out)])
        assert_one_line_error(result, f"--output {out}: cannot write it: No space left on device")


def test_a_closed_stdout_ends_quietly_with_141(text_bundle: Path, tmp_path: Path) -> None:
    table = tmp_path / "many.jsonl"
    table.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(2000)))
    command = (
        f'"$0" -m mlfactory.cli predict {shlex.quote(str(text_bundle))} '
        f'{shlex.quote(str(table))} --json | head -2; echo "rc=${{PIPESTATUS[0]}}"'
    )
    done = subprocess.run(
        ["bash", "-c", command, sys.executable], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.splitlines() == ["[", "  {", "rc=141"], done.stdout
    assert done.stderr == ""
