"""Loading bundles: complete ones load without torch, broken ones give a clear BundleError."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlfactory.bundle import MAX_LABEL_CHARS, MAX_LABELS, load_bundle, parse_meta
from mlfactory.errors import BundleError
from mlfactory.training.train import TrainResult


def test_loading_and_predicting_does_not_import_torch(trained_digits: TrainResult) -> None:
    item = trained_digits.dataset.split("test")[0]
    code = (
        "import sys\n"
        "from mlfactory.predictor import Predictor\n"
        f"p = Predictor.from_path({str(trained_digits.bundle.path)!r})\n"
        f"print(p.predict([open({item.path!r}, 'rb').read()])[0].label)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in trained_digits.bundle.meta.labels


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_model", "model.onnx is missing"),
        ("no_meta", "bundle.json is missing"),
        ("bad_json", "not valid JSON"),
        ("no_labels", "lacks required keys: labels"),
        ("future", "format_version 99"),
    ],
)
def test_broken_bundles_are_named(
    trained_digits: TrainResult, tmp_path: Path, breakage: str, message: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, bundle)
    meta_path = bundle / "bundle.json"
    meta = json.loads(meta_path.read_text())
    if breakage == "no_model":
        (bundle / "model.onnx").unlink()
    elif breakage == "no_meta":
        meta_path.unlink()
    elif breakage == "bad_json":
        meta_path.write_text("{not json")
    elif breakage == "no_labels":
        del meta["labels"]
        meta_path.write_text(json.dumps(meta))
    else:
        meta["format_version"] = 99
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a folder"):
        load_bundle(tmp_path / "absent")


def test_a_label_longer_than_the_log_stores_is_refused(tmp_path: Path) -> None:
    meta = {"name": "m", "version": "1", "modality": "image", "preprocessing": {}}
    long = "x" * (MAX_LABEL_CHARS + 1)
    with pytest.raises(BundleError, match=r"has 201 characters; labels may have at most 200"):
        parse_meta({**meta, "labels": ["cat", long]}, tmp_path / "bundle.json")
    assert parse_meta({**meta, "labels": ["cat", long[:-1]]}, tmp_path).labels[1] == long[:-1]


@pytest.mark.parametrize(
    ("key", "most"),
    [("name", 200), ("version", 100), ("mlflow_run_id", 64), ("data_fingerprint", 64)],
)
def test_values_the_log_stores_must_fit_its_columns(tmp_path: Path, key: str, most: int) -> None:
    meta = {"name": "m", "version": "1", "modality": "image", "preprocessing": {}}
    meta["labels"] = ["cat", "dog"]
    with pytest.raises(BundleError, match=rf"{key} has {most + 1} characters; at most {most}"):
        parse_meta({**meta, key: "x" * (most + 1)}, tmp_path / "bundle.json")
    assert getattr(parse_meta({**meta, key: "x" * most}, tmp_path), key) == "x" * most


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("name", "digits 1\n2 -> digits", r"'\\n' at position 8"),
        ("version", "1\r", r"'\\r' at position 1"),
        ("version", "1\u2028forged", r"'\\u2028' at position 1"),
        ("name", "\x1b[31mred", r"'\\x1b' at position 0"),
    ],
)
def test_a_name_or_version_that_would_forge_log_lines_is_refused(
    tmp_path: Path, key: str, value: str, shown: str
) -> None:
    """The server logs `reloaded: <name> <version> -> ...`: a newline would forge a line."""
    meta = {"name": "m", "version": "1", "modality": "image", "preprocessing": {}}
    meta["labels"] = ["cat", "dog"]
    with pytest.raises(BundleError, match=rf"{key} holds the control character {shown}") as caught:
        parse_meta({**meta, key: value}, tmp_path / "bundle.json")
    assert "\n" not in str(caught.value)
    assert parse_meta({**meta, key: "digits 1.0 ünïcode"}, tmp_path).name  # printable: fine


def test_duplicate_labels_among_the_most_a_bundle_may_have_are_named(tmp_path: Path) -> None:
    """Counted once each (the check was quadratic: hours for a million labels)."""
    meta = {"name": "m", "version": "1", "modality": "image", "preprocessing": {}}
    labels = [f"class {i}" for i in range(MAX_LABELS - 2)] + ["class 7", "class 99997"]
    with pytest.raises(BundleError, match=r"duplicate labels \['class 7', 'class 99997'\]"):
        parse_meta({**meta, "labels": labels}, tmp_path / "bundle.json")
    labels[-2:] = ["extra 1", "extra 2"]
    assert len(parse_meta({**meta, "labels": labels}, tmp_path).labels) == MAX_LABELS


def test_more_labels_than_a_bundle_may_have_are_refused_in_one_line(tmp_path: Path) -> None:
    meta = {"name": "m", "version": "1", "modality": "image", "preprocessing": {}}
    labels = [f"class {i}" for i in range(MAX_LABELS + 1)]
    with pytest.raises(BundleError, match=rf"{MAX_LABELS + 1} labels; a bundle may have at most"):
        parse_meta({**meta, "labels": labels}, tmp_path / "bundle.json")
