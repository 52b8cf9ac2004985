"""Bundles broken the ways a probe (and real life: an interrupted copy, a hand edit) broke them.

Each case turns a copy of a good bundle into a broken one. Every command that reads a bundle
must refuse each with one line naming the file and the fault: `mlfactory predict`, `evaluate`
and `serve` (exit 2) and `POST /v1/admin/reload` (422).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Corruption:
    """One way to break a bundle, and a fragment of the one-line error it must cause."""

    name: str
    apply: Callable[[Path], None]
    fragment: str


def _edit_meta(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        path = bundle / "bundle.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return apply


def _truncate_model(bundle: Path) -> None:
    model = bundle / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])  # what an interrupted copy leaves


def _model_a_folder(bundle: Path) -> None:
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").mkdir()


CORRUPTIONS = [
    Corruption("truncated model.onnx", _truncate_model, "cannot be loaded by ONNX Runtime"),
    Corruption(
        "model.onnx is not ONNX",
        lambda bundle: (bundle / "model.onnx").write_bytes(b"<html>404</html>"),
        "cannot be loaded by ONNX Runtime",
    ),
    Corruption("no model.onnx", lambda bundle: (bundle / "model.onnx").unlink(), "is missing"),
    Corruption("model.onnx is a folder", _model_a_folder, "model.onnx is not a file"),
    Corruption(
        "bundle.json is not JSON",
        lambda bundle: (bundle / "bundle.json").write_text('{"name": '),
        "is not valid JSON",
    ),
    Corruption("bundle.json is a string", _edit_meta(lambda meta: "digits"), "a JSON object"),
    Corruption(
        "format_version is a string",
        _edit_meta(lambda meta: {**meta, "format_version": "2"}),
        "format_version '2' is not a positive integer",
    ),
    Corruption(
        "format_version from the future",
        _edit_meta(lambda meta: {**meta, "format_version": 2}),
        "upgrade mlfactory",
    ),
    Corruption(
        "preprocessing is null",
        _edit_meta(lambda meta: {**meta, "preprocessing": None}),
        "preprocessing must be a JSON object",
    ),
    Corruption(
        "duplicate labels",
        _edit_meta(lambda meta: {**meta, "labels": [meta["labels"][0]] * len(meta["labels"])}),
        "duplicate labels",
    ),
    Corruption(
        "more labels than the model has outputs",
        _edit_meta(lambda meta: {**meta, "labels": ["one", "two", "three"]}),
        "names 3 labels",
    ),
    Corruption(
        "a preprocessing value out of range",
        _edit_meta(
            lambda meta: {**meta, "preprocessing": {**meta["preprocessing"], "crop_size": 0}}
        ),
        "bundle.json: preprocessing.crop_size: 0 is not allowed",  # the key as bundle.json has it
    ),
    Corruption(
        "preprocessing that does not fit the model",
        _edit_meta(
            lambda meta: {
                **meta,
                "preprocessing": {**meta["preprocessing"], "resize_size": 40, "crop_size": 40},
            }
        ),
        "fails on a test input",
    ),
]


def corrupt_copy(bundle: Path, target: Path, corruption: Corruption) -> Path:
    """A copy of `bundle` at `target`, broken by `corruption`."""
    shutil.copytree(bundle, target)
    corruption.apply(target)
    return target
