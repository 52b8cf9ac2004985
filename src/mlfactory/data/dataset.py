"""The prepared dataset: validated items with a deterministic split, stored as JSON.

Splits are stratified by label and ordered by content hash (`assign_splits`): every class gets
its share of each split, the same files always get the same split on any machine, identical
files always land in the same split (no leakage), and adding a class moves nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass
class Item:
    """One labelled example: a file (image/audio) or a text."""

    key: str  # sha256 of the content
    label: str
    split: str
    path: str | None = None
    text: str | None = None

    def read_bytes(self) -> bytes:
        """The raw input as an encoder takes it."""
        if self.text is not None:
            return self.text.encode("utf-8")
        assert self.path is not None
        return Path(self.path).read_bytes()


@dataclass
class PreparedDataset:
    """A validated, split dataset; what training and evaluation read."""

    name: str
    modality: str
    source: str
    labels: list[str]
    items: list[Item]
    fingerprint: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Classes dropped for having fewer valid items than data.min_per_class: label -> count.
    dropped_labels: dict[str, int] = field(default_factory=dict)
    # Classes cut down to data.max_per_class: label -> valid items before the cap.
    capped_labels: dict[str, int] = field(default_factory=dict)
    # The class limits that applied (data.min_per_class, data.max_per_class).
    min_per_class: int | None = None
    max_per_class: int | None = None
    # Small classes: what the split rule did for them (see `split_sizes`).
    warnings: list[str] = field(default_factory=list)
    # A source string naming exactly this data (a `dvc:` source at its commit), if versioned.
    version: str | None = None

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    def label_index(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.labels)}

    def counts(self) -> dict[str, dict[str, int]]:
        """Items per split and label."""
        table: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
        for item in self.items:
            row = table[item.split]
            row[item.label] = row.get(item.label, 0) + 1
        return table

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = asdict(self)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PreparedDataset:
        payload = json.loads(path.read_text())
        payload["items"] = [Item(**item) for item in payload["items"]]
        return cls(**payload)


def content_key(data: bytes) -> str:
    """The identity of an item: sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def split_position(key: str) -> float:
    """Where an item falls in [0, 1) by its content hash: the order of items within a class."""
    return int(key[:12], 16) / float(16**12)


def split_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a class's `count` items go to val and to test.

    Each split gets its fraction of the class, rounded half up. The small-class rule: once a
    class has 3 items or more, a split with a non-zero fraction gets at least one item (a class
    of 17 with fractions 0.15 gets 3 val and 3 test, one of 5 gets 1 and 1); a class of 2 gives
    one item to test (when its fraction is not 0) and keeps one to train; a class of 1 trains.
    Train always keeps at least one item.

    Returns:
        (val items, test items) for the class.
    """
    val = math.floor(count * val_fraction + 0.5)
    test = math.floor(count * test_fraction + 0.5)
    if count >= 3:
        val = max(val, 1 if val_fraction > 0 else 0)
        test = max(test, 1 if test_fraction > 0 else 0)
    elif count == 2:
        val, test = 0, 1 if test_fraction > 0 else 0
    else:
        val, test = 0, 0
    while val + test > count - 1:  # train keeps one: take from the larger held-out split
        if val >= test and val > 0:
            val -= 1
        else:
            test -= 1
    return val, test


def assign_splits(
    items: list[tuple[str, str]], val_fraction: float, test_fraction: float
) -> dict[str, str]:
    """The split of every item, stratified by label and ordered by content hash.

    Within each class the items are ordered by their content hash (`split_position`); the first
    ones go to test, the next to val and the rest to train, in the numbers `split_sizes` gives.
    The split therefore depends only on the contents of the class: it is the same on every
    machine and run, and a new class moves nothing. A file added to a class shifts the test
    boundary by at most one place and the train boundary by at most two (when val and test
    both grow by one), so it moves at most three of the class's existing items, each into a
    neighbouring split (test <-> val, val <-> train). Exact per-class shares and items
    that never move are not both possible; this keeps the shares and bounds the moves.

    Args:
        items: (content key, label) of each item; keys are unique.
        val_fraction: share of each class in the validation split.
        test_fraction: share of each class in the test split.

    Returns:
        content key -> "train", "val" or "test".
    """
    by_label: dict[str, list[str]] = defaultdict(list)
    for key, label in items:
        by_label[label].append(key)
    splits: dict[str, str] = {}
    for keys in by_label.values():
        keys.sort(key=lambda k: (split_position(k), k))
        val, test = split_sizes(len(keys), val_fraction, test_fraction)
        for rank, key in enumerate(keys):
            splits[key] = "test" if rank < test else "val" if rank < test + val else "train"
    return splits


def fingerprint_items(items: list[Item]) -> str:
    """A hash of the dataset's contents, labels and split; changes when any of them does."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda it: (it.key, it.label)):
        digest.update(f"{item.key}\t{item.label}\t{item.split}\n".encode())
    return digest.hexdigest()[:16]
