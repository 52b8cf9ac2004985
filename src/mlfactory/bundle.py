"""The model bundle: the only thing serving needs.

A bundle is a folder holding `model.onnx`, `bundle.json` and, per modality, small assets
(`tokenizer.json` for text). It is written by `mlfactory.training.export` and read here without
torch. Nothing in a bundle is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlfactory.errors import BundleError, ConfigError
from mlfactory.modalities import Encoder, Modality, get_modality
from mlfactory.paths import is_within

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
META_FILE = "bundle.json"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
# Channel statistics of an early stage of a convolutional backbone (mlfactory.training.network).
EARLY_FEATURES = "early_features"
# An optional third output: the OOD score of each input, computed in the model's graph from its
# monitoring profile (mlfactory.training.ood_graph). The model's metadata then names the
# profile's scorer by its fingerprint under OOD_SCORER_KEY.
OOD_SCORE = "ood_score"
OOD_SCORER_KEY = "mlfactory.ood_scorer"
REQUIRED_KEYS = ("name", "version", "modality", "labels", "preprocessing")
# The longest label, in characters: the prediction log stores labels in columns this wide
# (`serving.log_tables`), and `POST /v1/feedback` takes true labels up to this long.
MAX_LABEL_CHARS = 200
# The longest name and version, and run id or data fingerprint, the log's columns hold.
MAX_NAME_CHARS, MAX_VERSION_CHARS, MAX_ID_CHARS = 200, 100, 64
# The most classes a bundle may have: each label is a series of `/metrics` (predictions per
# label), created when the model is loaded. ImageNet-21k (21,841 classes) fits.
MAX_LABELS = 100_000
# Unicode categories refused in a name or version: control characters and line or paragraph
# separators would forge lines in the server's log, which names the model on every reload.
_LINE_BREAKING_CATEGORIES = {"Cc", "Zl", "Zp"}


@dataclass
class BundleMeta:
    """The contents of `bundle.json`."""

    name: str
    version: str
    modality: str
    labels: list[str]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    mlflow_run_id: str | None = None
    created_at: str | None = None
    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=lambda: [PROBABILITIES, EMBEDDING])
    export: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """What `GET /v1/model` shows."""
        return {
            "name": self.name,
            "version": self.version,
            "modality": self.modality,
            "labels": self.labels,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "git_commit": self.git_commit,
            "data_fingerprint": self.data_fingerprint,
            "mlflow_run_id": self.mlflow_run_id,
        }


@dataclass
class Bundle:
    """A bundle on disk: metadata plus the path of its ONNX model."""

    path: Path
    meta: BundleMeta

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def modality(self) -> Modality:
        return get_modality(self.meta.modality)

    def encoder(self) -> Encoder:
        """The modality's preprocessing, configured as at training time."""
        return self.modality.encoder(self.meta.preprocessing, self.path)

    def session(self, intra_op_threads: int = 0, inter_op_threads: int = 0) -> Any:
        """An ONNX Runtime inference session on the bundle's model (CPU).

        Raises:
            BundleError: ONNX Runtime cannot load `model.onnx` (truncated, corrupt, not ONNX).
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: an idle server costs no CPU, and a
        # training process that also holds a session does not fight its own torch threads.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own exception types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BundleError(
                f"{self.model_path} cannot be loaded by ONNX Runtime (truncated or corrupt? "
                f"copy the bundle again): {reason}"
            ) from None

    def save_meta(self) -> None:
        """Rewrite `bundle.json` (e.g. after evaluation adds metrics)."""
        write_meta(self.path, self.meta)


def write_meta(path: Path, meta: BundleMeta) -> None:
    """Write `bundle.json` atomically."""
    target = path / META_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta.to_json(), indent=2, sort_keys=False) + "\n")
    tmp.replace(target)


def copy_bundle(source: Path, out: Path) -> None:
    """Copy a bundle folder to `out`, all or nothing: into a temporary sibling of `out`, renamed
    into place once complete and removed when the copy fails.

    Raises:
        BundleError: `out` is inside the bundle (the copy would copy itself, and the bundle
            would change), a file of the bundle cannot be read (`cannot read <file>: <reason>`),
            `out` cannot be written (`cannot write <out>: <reason>`), or a copy fails part-way
            (`cannot copy <file> to <out>: <reason>`); `out` is not created.
        BundleError: the bundle holds a symbolic link (`refuse_links`).
    """
    if is_within(out, source):
        raise BundleError(f"{out} is inside the bundle {source}: give a folder outside it")
    refuse_links(source)
    tmp = out.parent / f".{out.name[:64]}.{uuid.uuid4().hex[:8]}.tmp"  # short: any name fits

    def copy_file(src: str, dst: str) -> object:
        try:
            return shutil.copy2(src, dst)
        except OSError as exc:  # not copytree's to collect: the first failure stops the copy
            raise _copy_error(exc, src, out) from None

    try:  # symlinks=True: a link added after the check is copied as a link, never followed
        shutil.copytree(source, tmp, symlinks=True, copy_function=copy_file)
        tmp.rename(out)
    except shutil.Error as exc:  # a sub-folder copytree could not list or stamp
        src, _, why = exc.args[0][0]
        raise BundleError(f"cannot copy {src} to {out}: {why}") from None
    except OSError as exc:
        raise _copy_error(exc, str(source), out) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_error(exc: OSError, source: str, out: Path) -> BundleError:
    reason = exc.strerror or str(exc)
    if exc.filename2 is not None:  # while copying the bytes: either side may have failed
        return BundleError(f"cannot copy {source} to {out}: {reason}")
    if exc.filename == source:  # opening or listing the source
        return BundleError(f"cannot read {source}: {reason}")
    return BundleError(f"cannot write {out}: {reason}")


def refuse_links(folder: Path) -> None:
    """Refuse a bundle holding symbolic links: its files must be its own.

    A link in a bundle (`README.txt -> ~/.aws/credentials`, `extra -> $HOME`) would be read
    through, or copied as the file it names, into the fetched bundle and the serving image built
    from it. The bundle folder itself may be a link; nothing inside it may.

    Raises:
        BundleError: one line naming every link found (relative to `folder`).
    """
    links = []
    for parent, folders, files in os.walk(folder):  # os.walk does not descend into links
        for name in folders + files:
            if os.path.islink(os.path.join(parent, name)):
                links.append(os.path.relpath(os.path.join(parent, name), folder))
    if links:
        raise BundleError(
            f"the bundle {folder} holds symbolic links ({', '.join(sorted(links)[:10])}): a "
            "bundle's files must be regular files inside it; replace each link by the file "
            "or remove it"
        )


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle folder (or a path to its `bundle.json`) and check it is complete and sane.

    Raises:
        BundleError: the folder, `model.onnx` or `bundle.json` is missing or malformed, or the
            folder holds a symbolic link (`refuse_links`); the message is one line naming the
            file and the key.
    """
    folder = Path(path)
    if folder.name == META_FILE:
        folder = folder.parent
    try:
        return _read_bundle(folder)
    except OSError as exc:  # a name too long, a folder not ours to read
        raise BundleError(f"cannot read the bundle at {folder}: {exc.strerror or exc}") from None


def _read_bundle(folder: Path) -> Bundle:
    if not folder.is_dir():
        raise BundleError(f"bundle not found: {folder} is not a folder")
    meta_path, model_path = folder / META_FILE, folder / MODEL_FILE
    for required in (meta_path, model_path):
        if not required.is_file():
            what = "is not a file" if required.exists() else "is missing"
            raise BundleError(f"incomplete bundle: {required} {what}")
    refuse_links(folder)
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path} is not valid JSON: {exc}") from None
    return Bundle(path=folder, meta=parse_meta(raw, meta_path))


def parse_meta(raw: Any, meta_path: Path) -> BundleMeta:
    """Check the decoded `bundle.json` and build its `BundleMeta`.

    Raises:
        BundleError: not an object, a required key missing, a value of the wrong kind, a
            name or version holding a control character, or more than `MAX_LABELS` labels.
    """
    if not isinstance(raw, dict):
        raise BundleError(f"{meta_path} must hold a JSON object, not {type(raw).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise BundleError(f"{meta_path} lacks required keys: {', '.join(missing)}")
    version = raw.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{meta_path}: format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{meta_path} has format_version {version}; this mlfactory reads up to "
            f"{FORMAT_VERSION}: upgrade mlfactory"
        )
    for key in ("name", "version", "modality"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise BundleError(f"{meta_path}: {key} must be a non-empty string")
    for key in ("name", "version"):
        _refuse_line_breaks(key, raw[key], meta_path)
    _check_lengths(raw, meta_path)
    _check_labels(raw["labels"], meta_path)
    if not isinstance(raw["preprocessing"], dict):
        raise BundleError(
            f"{meta_path}: preprocessing must be a JSON object holding the parameters training "
            "used, not " + json.dumps(raw["preprocessing"])[:40]
        )
    for key in ("metrics", "config", "inputs", "export"):
        if not isinstance(raw.get(key, {}), dict):
            raise BundleError(f"{meta_path}: {key} must be a JSON object")
    for key in ("git_commit", "data_fingerprint", "mlflow_run_id", "created_at"):
        if not isinstance(raw.get(key), str | None):
            raise BundleError(f"{meta_path}: {key} must be a string or null")
    try:
        modality = get_modality(raw["modality"])
        preprocessing = modality.preprocessing(raw["preprocessing"], "preprocessing.")
    except ConfigError as exc:
        raise BundleError(f"{meta_path}: {exc}") from None
    known = set(BundleMeta.__dataclass_fields__)
    fields = {key: value for key, value in raw.items() if key in known}
    return BundleMeta(**{**fields, "preprocessing": preprocessing})


def _check_lengths(raw: dict[str, Any], meta_path: Path) -> None:
    """Values the prediction log stores must fit its columns (PostgreSQL refuses longer ones)."""
    limits = {
        "name": MAX_NAME_CHARS,
        "version": MAX_VERSION_CHARS,
        "mlflow_run_id": MAX_ID_CHARS,
        "data_fingerprint": MAX_ID_CHARS,
    }
    for key, most in limits.items():
        value = raw.get(key)
        if isinstance(value, str) and len(value) > most:
            raise BundleError(
                f"{meta_path}: {key} has {len(value)} characters; at most {most} (the "
                "prediction log stores it)"
            )


def _refuse_line_breaks(key: str, value: str, meta_path: Path) -> None:
    """Refuse a control character or line separator in a value the server's log prints."""
    for index, char in enumerate(value):
        if unicodedata.category(char) in _LINE_BREAKING_CATEGORIES:
            raise BundleError(
                f"{meta_path}: {key} holds the control character {char!r} at position "
                f"{index}: use printable characters only"
            )


def _check_labels(labels: Any, meta_path: Path) -> None:
    if not isinstance(labels, list):
        raise BundleError(f"{meta_path}: labels must be a list of non-empty strings")
    if len(labels) > MAX_LABELS:
        raise BundleError(
            f"{meta_path}: {len(labels)} labels; a bundle may have at most {MAX_LABELS} (each "
            "label is a series of the server's metrics)"
        )
    if not all(isinstance(label, str) and label for label in labels):
        raise BundleError(f"{meta_path}: labels must be a list of non-empty strings")
    if len(labels) < 2:
        raise BundleError(f"{meta_path}: labels must name at least 2 classes")
    duplicates = sorted(label for label, count in Counter(labels).items() if count > 1)
    if duplicates:
        raise BundleError(f"{meta_path}: duplicate labels {duplicates}: each label once")
    too_long = long_label(labels)
    if too_long:
        raise BundleError(f"{meta_path}: {too_long}")


def long_label(labels: list[str]) -> str | None:
    """What is wrong when a label is longer than `MAX_LABEL_CHARS`, or None when none is."""
    for label in labels:
        if len(label) > MAX_LABEL_CHARS:
            return (
                f"label '{label[:40]}...' has {len(label)} characters; labels may have at most "
                f"{MAX_LABEL_CHARS} (the prediction log stores them): shorten it"
            )
    return None
