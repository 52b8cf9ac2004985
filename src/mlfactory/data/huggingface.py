"""`hf:<dataset>[:<split>]`: a Hugging Face data set, through the `datasets` package (lazily).

Without a split every split is loaded and merged; the hash split decides anew. Text comes from
`data.text_column`; images and audio from the first column of the modality's feature type
(`Modality.hf_feature`: Image / Audio), written once as files into the cache
(`<label>/<split>-<row><suffix>`). Labels stored as class indices are mapped to their class
names; rows with no label (-1, as in unlabelled test splits) are skipped.

A value without bytes names a file by its `path`: that file is read only where `datasets` put
it (its cache, the Hugging Face hub's cache) or inside the data set's own local folder
(`hf:/data/my-images`). A data set is not ours: a row naming any other file
(`~/.aws/credentials`) is skipped with the reason, never copied into the data cache.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlfactory.data.folders import scan_class_folder
from mlfactory.data.raw import RawSource, SourceContext, skip
from mlfactory.data.staging import build_once
from mlfactory.data.tables import check_columns, label_text, no_label_reason, rows_to_raw
from mlfactory.errors import DataError, first_line
from mlfactory.modalities import Modality
from mlfactory.paths import is_within


def load_hf(spec: str) -> list[tuple[str, Any]]:
    """(split name, data set) pairs of `hf:<name>[:<split>]`.

    Raises:
        DataError: `datasets` is not installed, or loading failed (offline, unknown name).
    """
    name, _, split = spec.partition(":")
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise DataError(
            f"source 'hf:{spec}' needs the datasets package: pip install datasets"
        ) from None
    try:
        loaded = datasets.load_dataset(name, split=split or None)
    except Exception as exc:  # the hub raises many types; report them all the same way
        raise DataError(
            f"could not load Hugging Face data set '{name}' ({first_line(exc)}): check the name "
            "and split, and that you are online or have it cached"
        ) from None
    if hasattr(loaded, "keys"):  # a DatasetDict: every split
        return [(str(key), loaded[key]) for key in loaded]
    return [(split, loaded)]


def _label_names(dataset: Any, column: str) -> list[str] | None:
    feature = getattr(dataset, "features", {}).get(column)
    names = getattr(feature, "names", None)
    return list(names) if names else None


def _labelled_rows(dataset: Any, label_column: str) -> Iterable[tuple[int, dict[str, Any]]]:
    names = _label_names(dataset, label_column)
    for index, row in enumerate(dataset):
        value = row.get(label_column)
        if names is not None and isinstance(value, int):
            value = names[value] if 0 <= value < len(names) else None
        yield index, {**row, label_column: value}


def resolve_hf(spec: str, ctx: SourceContext) -> RawSource:
    """Resolve `hf:<name>[:<split>]` into candidates (texts inline, media as cached files)."""
    if ctx.modality.hf_feature is not None:
        return _resolve_media(spec, ctx)
    data, result = ctx.data, RawSource()
    for split, dataset in load_hf(spec):
        origin = f"hf:{spec.partition(':')[0]}:{split}"
        check_columns(origin, list(dataset.column_names), data.text_column, data.label_column)
        rows = _labelled_rows(dataset, data.label_column)
        result.extend(rows_to_raw(origin, rows, data.text_column, data.label_column))
    return result


def _media_column(dataset: Any, modality: Modality) -> tuple[str, Any]:
    features: Mapping[str, Any] = getattr(dataset, "features", {})
    for column, feature in features.items():
        if type(feature).__name__ == modality.hf_feature:
            return column, feature
    for column in dataset.column_names:
        if column in (modality.name, "img"):
            return column, None
    raise DataError(
        f"no {modality.name} column in this Hugging Face data set; columns present: "
        f"{', '.join(dataset.column_names)}"
    )


def _resolve_media(spec: str, ctx: SourceContext) -> RawSource:
    params = json.dumps([spec, ctx.modality.name, ctx.data.label_column])
    dest = ctx.sources_dir / f"hf-{hashlib.sha256(params.encode()).hexdigest()[:16]}"
    skipped = build_once(dest, lambda tmp: _write_media(spec, ctx, tmp), ctx.refresh)
    result = scan_class_folder(dest, ctx.modality)
    result.skipped[:0] = skipped
    return result


def readable_roots(spec: str) -> list[Path]:
    """The folders a data set's rows may name files in: the caches of `datasets` and of the
    Hugging Face hub (where `load_dataset` downloads and extracts), and the data set's own
    folder when `hf:<name>` names a local one."""
    roots: list[Path] = []
    datasets_config = getattr(sys.modules.get("datasets"), "config", None)
    for name in ("HF_DATASETS_CACHE", "DOWNLOADED_DATASETS_PATH", "EXTRACTED_DATASETS_PATH"):
        folder = getattr(datasets_config, name, None)
        if folder:
            roots.append(Path(folder))
    try:
        from huggingface_hub import constants

        roots.append(Path(constants.HF_HUB_CACHE))
    except (ImportError, AttributeError):  # an old or absent huggingface_hub: its cache unknown
        pass
    local = Path(spec.partition(":")[0]).expanduser()
    if local.is_dir():
        roots.append(local)
    return roots


def _write_media(spec: str, ctx: SourceContext, dest: Path) -> list[dict[str, str]]:
    skipped: list[dict[str, str]] = []
    label_column = ctx.data.label_column
    splits = load_hf(spec)
    roots = readable_roots(spec)  # after load_hf: `datasets` is imported, its config set
    for split, loaded in splits:
        column, feature = _media_column(loaded, ctx.modality)
        check_columns(f"hf:{spec}", list(loaded.column_names), column, label_column)
        dataset = loaded
        if feature is not None and hasattr(loaded, "cast_column"):
            # Undecoded values are {"bytes", "path"}: the original file, no codec needed.
            dataset = loaded.cast_column(column, type(feature)(decode=False))
        for index, row in _labelled_rows(dataset, label_column):
            where = f"hf:{spec}:{split}:{index}"
            label = row.get(label_column)
            if label is None or not label_text(label):
                skipped.append(skip(where, no_label_reason(label, label_column)))
                continue
            folder = dest / label_text(label).replace("/", "_").lstrip(".")
            stem = f"{split or 'all'}-{index:06d}"
            reason = _write_value(row[column], folder, stem, ctx.modality, roots)
            if reason:
                skipped.append(skip(where, reason))
    return skipped


def _write_value(
    value: Any, folder: Path, stem: str, modality: Modality, roots: list[Path]
) -> str | None:
    """Write one image/audio value as a file; returns why it could not be, or None. A value
    that names a file by its path is read only when the file lies inside one of `roots`."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(value, "save"):  # a decoded PIL image
        value.save(folder / f"{stem}.png")
        return None
    if not isinstance(value, Mapping):
        return f"unsupported {modality.name} value of type {type(value).__name__}"
    if value.get("bytes"):
        suffix = Path(str(value.get("path") or "")).suffix.lower() or modality.hf_default_suffix
        (folder / f"{stem}{suffix}").write_bytes(value["bytes"])
        return None
    if value.get("path") and Path(value["path"]).is_file():
        source = Path(value["path"])
        if not any(is_within(source, root) for root in roots):
            return (
                f"{modality.name} value names the file {source}, outside the Hugging Face "
                "caches and the data set's folder: not read"
            )
        (folder / f"{stem}{source.suffix.lower()}").write_bytes(source.read_bytes())
        return None
    if value.get("array") is not None and value.get("sampling_rate"):
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, value["array"], int(value["sampling_rate"]), format="WAV")
        (folder / f"{stem}.wav").write_bytes(buffer.getvalue())
        return None
    return f"{modality.name} value has neither bytes, a readable path nor an array"
