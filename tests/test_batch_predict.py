"""`mlfactory predict` on many inputs: tables, folders, stdin, bad files, results files.

The bundles are small real ONNX models with the modalities' real encoders
(`tests/serving/tiny_bundles.py`); the inputs are real Reuters articles and MNIST digits.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mlfactory.batch_predict import (
    MAX_INPUT_BYTES,
    Input,
    Prediction,
    Skipped,
    iter_inputs,
    plan_inputs,
    predict_stream,
)
from mlfactory.bundle import load_bundle
from mlfactory.cli import app
from mlfactory.errors import InputError
from mlfactory.predictor import BatchOutput, Predictor
from mlfactory.serving.settings import ServingSettings

from .serving.tiny_bundles import tiny_bundle
from .test_cli import assert_one_line_error, table_inputs
from .unreadable import deny_listing

REUTERS = Path(__file__).parent / "fixtures" / "text" / "reuters_r8_sample.jsonl"
runner = CliRunner()


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("text") / "bundle", "text")


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("image") / "bundle", "image")


@pytest.fixture
def articles_csv(tmp_path: Path) -> Path:
    """The 36 real Reuters articles as a csv with other column names than the defaults."""
    rows = [json.loads(line) for line in REUTERS.read_text().splitlines()]
    path = tmp_path / "descriptions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["package", "description"])
        writer.writerows([f"pkg{i}", row["text"]] for i, row in enumerate(rows))
    return path


def test_a_text_csv_is_predicted_row_by_row_into_a_results_file(
    text_bundle: Path, articles_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.csv"
    result = runner.invoke(
        app,
        [
            *("predict", str(text_bundle), str(articles_csv)),
            *("--text-column", "description", "--output", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = load_bundle(text_bundle).meta.labels
    assert len(rows) == 36  # one row per article, not the whole file as one text
    assert [row["input"] for row in rows] == [f"{articles_csv}:{n}" for n in range(2, 38)]
    assert list(rows[0]) == ["input", "label", "score", *(f"p_{label}" for label in labels)]
    for row in rows:
        assert row["label"] in labels
        assert sum(float(row[f"p_{label}"]) for label in labels) == pytest.approx(1, abs=1e-4)
    assert "predicted 36 input(s)" in result.output


def test_a_table_without_the_text_column_names_the_columns(
    text_bundle: Path, articles_csv: Path
) -> None:
    result = runner.invoke(app, ["predict", str(text_bundle), str(articles_csv)])
    assert_one_line_error(result, "column 'text' not found")
    assert "'package', 'description'" in result.output and "--text-column" in result.output


def test_jsonl_texts_stdin_and_text_options_in_one_call(text_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    stdin = "oil prices rose\n\nwheat exports fell\n"
    result = runner.invoke(
        app,
        [
            *("predict", str(text_bundle), str(REUTERS), "-"),
            *("--text", "a tanker in port", "--output", str(out)),
        ],
        input=stdin,
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    inputs = [row["input"] for row in rows]
    assert inputs[0] == "--text 1"
    assert inputs[1:37] == [f"{REUTERS}:{n}" for n in range(1, 37)]
    assert inputs[37:] == ["stdin:1", "stdin:3"]
    assert set(rows[0]) == {"input", "label", "score", "probabilities"}


def test_a_folder_is_read_recursively_and_bad_files_are_skipped_by_name(
    image_bundle: Path, digit_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(digit_folder / "3", folder / "a" / "deeper")
    shutil.copytree(digit_folder / "8", folder / "b")
    good = sorted(folder.rglob("*.png"))
    broken = folder / "b" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (folder / "b" / "notes.txt").write_text("not an image: not an input of an image bundle")
    out = tmp_path / "results.csv"

    result = runner.invoke(app, ["predict", str(image_bundle), str(folder), "-o", str(out)])

    assert result.exit_code == 1, result.output  # 1: something was skipped
    assert f"skipped {broken}:" in result.output
    assert "predicted 80 input(s); skipped 1" in result.output
    assert "ignored 1 file(s) of other kinds" in result.output
    with out.open(newline="") as handle:
        predicted = [row["input"] for row in csv.DictReader(handle)]
    assert sorted(predicted) == sorted(str(p) for p in good)


def test_a_folder_that_cannot_be_read_is_skipped_by_name(
    image_bundle: Path, digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sub-folder the user may not list is reported like an unreadable file: exit code 1."""
    folder = tmp_path / "photos"
    shutil.copytree(digit_folder / "3", folder / "a")
    shutil.copytree(digit_folder / "8", folder / "b" / "locked")
    deny_listing(monkeypatch, folder / "b" / "locked")
    out = tmp_path / "results.csv"

    result = runner.invoke(app, ["predict", str(image_bundle), str(folder), "-o", str(out)])

    assert result.exit_code == 1, result.output
    assert f"skipped {folder / 'b' / 'locked'}: cannot read folder: Permission denied" in (
        result.output
    )
    assert "predicted 40 input(s); skipped 1" in result.output
    with out.open(newline="") as handle:
        predicted = [row["input"] for row in csv.DictReader(handle)]
    assert sorted(predicted) == sorted(str(p) for p in (folder / "a").glob("*.png"))

    deny_listing(monkeypatch, folder)  # the folder given itself: nothing to predict
    result = runner.invoke(app, ["predict", str(image_bundle), str(folder)])
    assert result.exit_code == 1, result.output
    assert f"skipped {folder}: cannot read folder: Permission denied" in result.output
    assert result.stderr.strip().splitlines()[-1] == "predicted 0 input(s); skipped 1"


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_a_table_given_to_an_image_bundle_is_refused_in_one_line(
    image_bundle: Path, tmp_path: Path, kind: str
) -> None:
    table = tmp_path / f"descriptions.{kind}"
    table.write_text("text,label\nhello,a\n")
    result = runner.invoke(app, ["predict", str(image_bundle), str(table)])
    assert_one_line_error(result, "is a table, but this bundle classifies image files")


def test_a_binary_file_or_text_option_for_the_wrong_bundle_is_refused(
    text_bundle: Path, image_bundle: Path, digit_folder: Path
) -> None:
    png = next((digit_folder / "1").glob("*.png"))
    result = runner.invoke(app, ["predict", str(text_bundle), str(png)])
    assert_one_line_error(result, "is a binary file, not text")
    result = runner.invoke(app, ["predict", str(image_bundle), "--text", "hello"])
    assert_one_line_error(result, "--text is for text bundles")
    result = runner.invoke(app, ["predict", str(image_bundle)])
    assert_one_line_error(result, "no inputs")


def test_the_terminal_table_and_json_for_a_few_files(
    image_bundle: Path, digit_folder: Path
) -> None:
    paths = [str(p) for p in sorted((digit_folder / "5").glob("*.png"))[:3]]
    table = runner.invoke(app, ["predict", str(image_bundle), *paths])
    assert table.exit_code == 0, table.output
    assert all(path in table_inputs(table.output) for path in paths), table.output
    as_json = runner.invoke(app, ["predict", str(image_bundle), *paths, "--json"])
    assert [row["input"] for row in json.loads(as_json.output)] == paths


def test_when_every_file_is_skipped_no_empty_table_is_printed(
    image_bundle: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    result = runner.invoke(app, ["predict", str(image_bundle), str(broken)])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == "predicted 0 input(s); skipped 1"
    as_json = runner.invoke(app, ["predict", str(image_bundle), str(broken), "--json"])
    assert json.loads(as_json.stdout) == []  # a tool reading the list gets an empty one


def test_a_batch_the_model_fails_on_is_retried_one_by_one(
    digit_folder: Path, tmp_path: Path
) -> None:
    """A model that answers NaN for dark inputs: only the dark one of a batch is skipped.

    MNIST digits are white on black (dark: NaN here); inverted, they are black on white.
    """
    bundle = load_bundle(tiny_bundle(tmp_path / "unstable", "image", unstable=True))
    digits = sorted((digit_folder / "2").glob("*.png"))[:10]
    paths = []
    for path in digits[1:]:
        paths.append(tmp_path / f"inverted-{path.name}")
        Image.open(path).convert("L").point(lambda v: 255 - v).save(paths[-1])
    dark = digits[0]
    order = [*paths[:4], dark, *paths[4:]]
    calls: list[int] = []

    class Counting(Predictor):
        def run(self, encoded: list[dict[str, np.ndarray]]) -> BatchOutput:
            calls.append(len(encoded))
            return super().run(encoded)

    inputs = [Input(str(p), p.read_bytes) for p in order]
    results = list(predict_stream(Counting(bundle), inputs, batch_size=8))

    skipped = [r for r in results if isinstance(r, Skipped)]
    assert [s.id for s in skipped] == [str(dark)]
    assert "NaN or infinite" in skipped[0].reason
    assert not skipped[0].reason.startswith(str(dark))
    predicted = [r.input for r in results if isinstance(r, Prediction)]
    assert predicted == [str(p) for p in order if p != dark]
    assert calls == [8, 1, 1, 1, 1, 1, 1, 1, 1, 2]  # the failing batch, one by one, the rest


def test_stdin_of_an_image_bundle_is_one_file(image_bundle: Path, digit_folder: Path) -> None:
    png = next((digit_folder / "4").glob("*.png")).read_bytes()
    plan = plan_inputs(["-"], load_bundle(image_bundle).modality, stdin=io.BytesIO(png))
    assert plan.count == 1
    [result] = list(predict_stream(Predictor(load_bundle(image_bundle)), iter_inputs(plan)))
    assert isinstance(result, Prediction) and result.input == "-"


def test_names_with_brackets_are_shown_as_they_are(
    image_bundle: Path, digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table and the skipped lines print file names as text: `[bold]` is part of a name."""
    monkeypatch.chdir(tmp_path)
    Path("[draft]").mkdir()
    shutil.copy(next((digit_folder / "3").glob("*.png")), "[draft]/[bold]three.png")
    Path("[draft]/[red]cut.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")

    result = runner.invoke(app, ["predict", str(image_bundle), "[draft]"])

    assert result.exit_code == 1, result.output
    assert "│ [draft]/[bold]three.png │" in result.output
    assert "skipped [draft]/[red]cut.png:" in result.output


def test_links_to_devices_and_pipes_in_a_folder_are_skipped_unread(
    image_bundle: Path, digit_folder: Path, tmp_path: Path
) -> None:
    """A link to /dev/zero would be read until memory runs out: not a regular file, skipped."""
    folder = tmp_path / "photos"
    shutil.copytree(digit_folder / "3", folder)
    (folder / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.png")  # opening it would wait for a writer forever
    plan = plan_inputs([str(folder)], load_bundle(image_bundle).modality)
    skipped = {item.id: item.reason for item in iter_inputs(plan) if isinstance(item, Skipped)}
    assert skipped == {
        str(folder / "pipe.png"): "a named pipe (FIFO), not a regular file: not read",
        str(folder / "zero.png"): "a character device, not a regular file: not read",
    }

    result = runner.invoke(app, ["predict", str(image_bundle), str(folder)])
    assert result.exit_code == 1, result.output
    assert "predicted 40 input(s); skipped 2" in result.output
    given = runner.invoke(app, ["predict", str(image_bundle), str(folder / "pipe.png")])
    assert_one_line_error(given, "pipe.png is a named pipe (FIFO), not a file or folder")


def test_a_file_over_the_input_limit_is_skipped_unread_with_its_size(
    image_bundle: Path, digit_folder: Path, tmp_path: Path
) -> None:
    """The limit is the server's default upload limit; `--max-input-bytes` sets another."""
    assert ServingSettings().max_upload_bytes == MAX_INPUT_BYTES
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)  # sparse: no disk used
    digit = next((digit_folder / "6").glob("*.png"))
    result = runner.invoke(app, ["predict", str(image_bundle), str(big), str(digit)])
    assert result.exit_code == 1, result.output
    assert f"skipped {big}: 10,485,761 bytes, over the limit of 10,485,760 bytes" in result.output
    assert "predicted 1 input(s); skipped 1" in result.output

    size = digit.stat().st_size
    limited = [str(digit), "--max-input-bytes", str(size - 1)]
    result = runner.invoke(app, ["predict", str(image_bundle), *limited])
    assert f"{size:,} bytes, over the limit of {size - 1:,} bytes" in result.output
    assert "predicted 0 input(s); skipped 1" in result.output
    exact = runner.invoke(
        app, ["predict", str(image_bundle), str(digit), "--max-input-bytes", str(size)]
    )
    assert exact.exit_code == 0, exact.output


def test_stdin_over_the_limit_is_refused_and_a_long_line_skipped(
    image_bundle: Path, text_bundle: Path, digit_folder: Path
) -> None:
    image = load_bundle(image_bundle).modality
    with pytest.raises(InputError, match="more than 10,485,760 bytes, the limit of one input"):
        plan_inputs(["-"], image, stdin=io.BytesIO(bytes(MAX_INPUT_BYTES + 1)))
    png = next((digit_folder / "4").glob("*.png")).read_bytes()
    args = ["predict", str(image_bundle), "-", "--max-input-bytes", str(len(png) - 1)]
    assert_one_line_error(runner.invoke(app, args, input=png), f"more than {len(png) - 1:,} bytes")

    lines = b"oil prices rose\n" + b"x" * 40 + b"\nwheat exports fell"
    plan = plan_inputs(
        ["-"], load_bundle(text_bundle).modality, stdin=io.BytesIO(lines), max_bytes=20
    )
    items = list(iter_inputs(plan))
    assert [(type(item).__name__, item.id) for item in items] == [
        ("Input", "stdin:1"),
        ("Skipped", "stdin:2"),
        ("Input", "stdin:3"),
    ]
    assert isinstance(items[2], Input) and items[2].read() == b"wheat exports fell"


def test_stdin_given_twice_or_closed_is_one_error_line(
    image_bundle: Path, digit_folder: Path
) -> None:
    png = next((digit_folder / "4").glob("*.png")).read_bytes()
    twice = runner.invoke(app, ["predict", str(image_bundle), "-", "-"], input=png)
    assert_one_line_error(twice, "- (stdin) is given more than once")
    # A real process started with its stdin closed (`<&-`): Python's sys.stdin is None.
    command = f'"$0" -m mlfactory.cli predict {shlex.quote(str(image_bundle))} - <&-'
    done = subprocess.run(
        ["bash", "-c", command, sys.executable], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: - reads stdin, but stdin is closed: pipe the input in"


def test_json_and_output_together_are_refused(
    image_bundle: Path, digit_folder: Path, tmp_path: Path
) -> None:
    digit = str(next((digit_folder / "4").glob("*.png")))
    out = tmp_path / "results.csv"
    result = runner.invoke(app, ["predict", str(image_bundle), digit, "--json", "-o", str(out)])
    assert_one_line_error(result, "--json prints the results; --output")
    assert not out.exists()


def test_a_jsonl_line_that_is_not_json_is_skipped_as_such(
    text_bundle: Path, tmp_path: Path
) -> None:
    lines = REUTERS.read_text().splitlines()
    lines[2] = lines[2][:40]  # a line cut short: not JSON
    table = tmp_path / "news.jsonl"
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.csv"
    result = runner.invoke(app, ["predict", str(text_bundle), str(table), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert f"skipped {table}:3: invalid JSON: Unterminated string" in result.output
    assert "no text in column" not in result.output
    assert "predicted 35 input(s); skipped 1" in result.output


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_an_output_that_is_an_input_table_is_refused_and_the_table_kept(
    text_bundle: Path, articles_csv: Path, tmp_path: Path, link: str
) -> None:
    jsonl = tmp_path / "news.jsonl"
    shutil.copyfile(REUTERS, jsonl)
    kept = {path: path.read_bytes() for path in (articles_csv, jsonl)}
    for table in kept:
        out = table
        if link != "same":
            out = tmp_path / f"{link}{table.suffix}"
            make = os.symlink if link == "symlink" else os.link
            make(table, out)
        column = ["--text-column", "description"] if table.suffix == ".csv" else []
        result = runner.invoke(
            app, ["predict", str(text_bundle), str(table), "-o", str(out), *column]
        )
        assert_one_line_error(result, f"--output {out} is the input {table}")
        assert {path: path.read_bytes() for path in kept} == kept
        if link != "same":
            out.unlink()


def test_an_output_that_a_folder_reads_or_inside_the_bundle_is_refused(
    text_bundle: Path, articles_csv: Path, tmp_path: Path
) -> None:
    kept = articles_csv.read_bytes()
    folder = ["predict", str(text_bundle), str(tmp_path), "--text-column", "description"]
    result = runner.invoke(app, [*folder, "-o", str(articles_csv)])
    assert_one_line_error(result, f"--output {articles_csv} is the input {articles_csv}")
    assert articles_csv.read_bytes() == kept
    files = sorted(text_bundle.rglob("*"))
    for out in (text_bundle / "results.csv", text_bundle / "new" / "results.jsonl"):
        result = runner.invoke(app, ["predict", str(text_bundle), "--text", "oil", "-o", str(out)])
        assert_one_line_error(result, f"--output {out} is inside the bundle {text_bundle}")
    assert sorted(text_bundle.rglob("*")) == files
