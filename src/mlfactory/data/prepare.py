"""`prepare_dataset`: a recipe's data source -> a validated, deduplicated, split, cached dataset.

The result is cached as JSON under `<data.cache_dir>/<recipe name>/<hash of source + data
params>/prepared.json`, next to the source's cheap signature (file list; sizes, mtimes, inodes
and ctimes: `folders.tree_signature`). A later call returns the cached dataset while that
signature matches, unless `refresh=True`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlfactory.bundle import long_label
from mlfactory.config.constraints import check_dataclass
from mlfactory.config.schema import RecipeConfig
from mlfactory.data.dataset import (
    SPLITS,
    Item,
    PreparedDataset,
    assign_splits,
    content_key,
    fingerprint_items,
    split_sizes,
)
from mlfactory.data.folders import read_item_file
from mlfactory.data.raw import RawItem, RawSource, SourceContext, origin_order, skip
from mlfactory.data.sources import local_path, resolve_source, source_signature, split_scheme
from mlfactory.errors import DataError, InputError
from mlfactory.modalities import Modality, get_modality

logger = logging.getLogger(__name__)

CACHE_FORMAT = 3  # bump when the prepared layout or the validation rules change
MAX_LOGGED_SKIPS = 20
STATE_FILE = "source-state.json"  # beside prepared.json: the source's signature it was made at


@dataclass(frozen=True)
class ValidItem:
    """A candidate that passed its modality's check, keyed by the sha256 of its content."""

    raw: RawItem
    key: str


def prepare_dataset(
    config: RecipeConfig, refresh: bool = False, min_classes: int = 2
) -> PreparedDataset:
    """Resolve, validate, deduplicate, limit and split `config.data.source`; cache the result.

    Args:
        config: the recipe; `config.data` names the source and the split parameters.
        refresh: ignore a cached result and prepare (and re-download remote data) again.
        min_classes: the fewest classes the source may yield: 2 to train on it, 1 for a source
            that is only scored (`compare --data`: a week of traffic that saw one class).

    Returns:
        The prepared dataset: items with content keys and splits, sorted labels, skipped files.

    Raises:
        ConfigError: a value of `config.data` is not allowed (callers that did not load the
            recipe through `load_recipe` get the same check).
        DataError: the source does not exist, yields fewer than 2 classes, an empty train
            split, or a label longer than a bundle takes.
    """
    check_dataclass(config.data, "data.")
    ctx = SourceContext(data=config.data, modality=get_modality(config.modality), refresh=refresh)
    prepared_path = cache_path(config)
    # A local source is signed before it is read (a file changed while it is read then has the
    # next call read it again); a scheme's source once resolved, which may download it.
    local = split_scheme(ctx.source) is None
    signature = source_signature(ctx) if local or not refresh else None
    dataset = None if signature is None or refresh else _load_cached(prepared_path, signature)
    if dataset is not None and len(dataset.labels) < min_classes:
        dataset = None  # cached for scoring: prepared again, which says why it cannot be used
    if dataset is None:
        dataset = _prepare(config, ctx, prepared_path, signature if local else None, min_classes)
    else:
        logger.info("using prepared dataset %s", prepared_path)
    too_long = long_label(dataset.labels)
    if too_long:  # the bundle would refuse it: before training, not at export
        raise DataError(f"data source '{config.data.source}': {too_long}")
    return dataset


def _prepare(
    config: RecipeConfig,
    ctx: SourceContext,
    prepared_path: Path,
    signature: str | None,
    min_classes: int = 2,
) -> PreparedDataset:
    """Resolve, build and cache the dataset with the source's `signature` (None: sign it now)."""
    raw = resolve_source(ctx)
    dataset = build_dataset(config, raw, min_classes)
    dataset.save(prepared_path)
    tmp = prepared_path.with_name(f"{STATE_FILE}.tmp")
    tmp.write_text(json.dumps({"signature": signature or source_signature(ctx)}))
    tmp.replace(prepared_path.with_name(STATE_FILE))
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


def build_dataset(config: RecipeConfig, raw: RawSource, min_classes: int = 2) -> PreparedDataset:
    """Validate, deduplicate, apply the class limits and split raw candidates (no caching).

    Raises:
        DataError: fewer than `min_classes` classes remain (no class at all, whatever it is).
    """
    data = config.data
    modality = get_modality(config.modality)
    valid, skipped = validate_items(raw.items, modality)
    unique, duplicates = deduplicate(valid)
    kept, dropped, capped = apply_class_limits(unique, data.min_per_class, data.max_per_class)
    splits = assign_splits(
        [(v.key, v.raw.label) for v in kept], data.val_fraction, data.test_fraction
    )
    items = [
        Item(
            key=v.key,
            label=v.raw.label,
            split=splits[v.key],
            # Absolute: training may run from another working directory than preparation.
            path=str(v.raw.path.absolute()) if v.raw.path is not None else None,
            text=v.raw.text,
        )
        for v in sorted(kept, key=lambda v: (v.raw.label, v.key))
    ]
    all_skipped = sorted(
        raw.skipped + skipped + duplicates, key=lambda s: (origin_order(s["path"]), s["reason"])
    )
    _log_skipped(all_skipped, dropped, data.min_per_class)
    labels = sorted({item.label for item in items})
    _check_usable(data.source, modality.name, labels, all_skipped, dropped, min_classes)
    warnings = small_class_warnings(items, data.val_fraction, data.test_fraction)
    return PreparedDataset(
        name=config.name,
        modality=config.modality,
        source=data.source,
        labels=labels,
        items=items,
        fingerprint=fingerprint_items(items),
        skipped=all_skipped,
        dropped_labels=dropped,
        capped_labels=capped,
        min_per_class=data.min_per_class,
        max_per_class=data.max_per_class,
        warnings=warnings,
        version=raw.version,
    )


def small_class_warnings(items: list[Item], val_fraction: float, test_fraction: float) -> list[str]:
    """One line per class that is too small for its fractions (see `split_sizes`).

    A class below 3 items cannot give every split an item; a class whose val or test share
    rounds to 0 gets one item there by the small-class rule, and its metrics rest on that item.
    """
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for item in items:
        counts[item.label][item.split] += 1
    lines = []
    for label, row in sorted(counts.items()):
        total = sum(row.values())
        shares = f"{row['train']} train, {row['val']} val, {row['test']} test"
        fractions = (("val", val_fraction), ("test", test_fraction))
        empty = [split for split, fraction in fractions if fraction > 0 and row[split] == 0]
        if empty:
            lines.append(
                f"class '{label}' has {total} item(s): too few for every split ({shares}); "
                f"no {' or '.join(empty)} item: add items to it"
            )
            continue
        by_fraction = {s: math.floor(total * f + 0.5) for s, f in fractions}
        if split_sizes(total, val_fraction, test_fraction) != (
            by_fraction["val"],
            by_fraction["test"],
        ):
            lines.append(
                f"class '{label}' has {total} items: {shares} (at least one held-out item "
                "each; its val and test metrics rest on very few items)"
            )
    return lines


def validate_items(
    items: list[RawItem], modality: Modality
) -> tuple[list[ValidItem], list[dict[str, str]]]:
    """Key every candidate by the hash of its content (`Modality.identity`) and keep those its
    modality's check accepts.

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
                data = read_item_file(item.path)
            except InputError as exc:
                return skip(item.origin, str(exc))
            except OSError as exc:
                return skip(item.origin, f"cannot read file: {exc.strerror or exc}")
        reason = modality.check_file(data)
        if reason:
            return skip(item.origin, reason)
        return ValidItem(item, content_key(modality.identity(data)))

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
    for v in sorted(valid, key=lambda v: origin_order(v.raw.origin)):
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
) -> tuple[list[ValidItem], dict[str, int], dict[str, int]]:
    """Drop classes below `min_per_class`; keep `max_per_class` items of the others.

    The kept items are those with the smallest *selection* hash, a second hash of the content
    key: deterministic and independent of file names and order. It must not be the content key
    itself, which also orders the split (small keys go to test, then val): capping by the key
    would fill test and val first and starve train.

    Returns:
        The kept candidates, the dropped classes with their item counts, and the capped
        classes with their item counts before the cap.
    """
    by_label: dict[str, list[ValidItem]] = defaultdict(list)
    for v in valid:
        by_label[v.raw.label].append(v)
    kept: list[ValidItem] = []
    dropped: dict[str, int] = {}
    capped: dict[str, int] = {}
    for label, members in sorted(by_label.items()):
        if min_per_class is not None and len(members) < min_per_class:
            dropped[label] = len(members)
            continue
        members.sort(key=lambda v: selection_hash(v.key))
        if max_per_class is not None and len(members) > max_per_class:
            capped[label] = len(members)
            members = members[:max_per_class]
        kept.extend(members)
    return kept, dropped, capped


def describe_limits(dataset: PreparedDataset) -> list[str]:
    """What the class limits did to the data, one line each (nothing when they did nothing)."""
    lines = []
    if dataset.capped_labels:
        before = sum(dataset.capped_labels.values())
        kept = len(dataset.capped_labels) * (dataset.max_per_class or 0)
        lines.append(
            f"data.max_per_class={dataset.max_per_class} capped "
            f"{len(dataset.capped_labels)} class(es): kept {kept} of their {before} items "
            f"({_counts(dataset.capped_labels)}); data.max_per_class=null keeps all"
        )
    if dataset.dropped_labels:
        lines.append(
            f"data.min_per_class={dataset.min_per_class} dropped "
            f"{len(dataset.dropped_labels)} class(es): {_counts(dataset.dropped_labels)}; "
            "data.min_per_class=null keeps them"
        )
    return lines


def _counts(by_label: dict[str, int], shown: int = 8) -> str:
    parts = [f"{label} {count}" for label, count in sorted(by_label.items())]
    more = f", ... {len(parts) - shown} more" if len(parts) > shown else ""
    return ", ".join(parts[:shown]) + more


def selection_hash(key: str) -> str:
    """A hash of the content key that is independent of the split it decides."""
    return hashlib.sha256(f"max_per_class:{key}".encode()).hexdigest()


def _check_usable(
    source: str,
    modality: str,
    labels: list[str],
    skipped: list[dict[str, str]],
    dropped: dict[str, int],
    min_classes: int = 2,
) -> None:
    hint = " or lower data.min_per_class" if dropped else ""
    if not labels and dropped:
        counts = ", ".join(f"{label} {count}" for label, count in sorted(dropped.items()))
        raise DataError(
            f"data source '{source}': every class has fewer items than data.min_per_class "
            f"({counts}); lower data.min_per_class or add items"
        )
    example = f" (e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
    if not labels:
        raise DataError(
            f"data source '{source}' yields no valid {modality} items, {len(skipped)} skipped"
            f"{example}: check that it holds {modality} data in one folder or label per class"
            f"{hint}"
        )
    if len(labels) < min_classes:
        raise DataError(
            f"data source '{source}' yields only 1 class ('{labels[0]}'): a classifier needs at "
            f"least 2, add another class{hint}"
            + (f"; {len(skipped)} item(s) were skipped{example}" if skipped else "")
        )


def _load_cached(prepared: Path, signature: str) -> PreparedDataset | None:
    try:
        if json.loads(prepared.with_name(STATE_FILE).read_text())["signature"] != signature:
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
    # INFO: the dataset keeps them, and `mlfactory data` / `train` print them from there (a
    # cached dataset logs nothing, and a WARNING here would print them twice).
    for entry in skipped[:MAX_LOGGED_SKIPS]:
        logger.info("skipped %s: %s", entry["path"], entry["reason"])
    if len(skipped) > MAX_LOGGED_SKIPS:
        logger.info(
            "... %d more skipped (see skipped in prepared.json)", len(skipped) - MAX_LOGGED_SKIPS
        )
    for label, count in dropped.items():
        logger.info("dropped class '%s': %d valid items < min_per_class=%s", label, count, minimum)


def _summary(dataset: PreparedDataset) -> str:
    counts = dataset.counts()
    sizes = ", ".join(f"{split} {sum(counts[split].values())}" for split in SPLITS)
    return f"{len(dataset.labels)} classes, {sizes}, {len(dataset.skipped)} skipped"
