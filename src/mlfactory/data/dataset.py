"""The prepared dataset: validated items with a deterministic split, stored as JSON.

Splits are assigned from each item's content hash, so they are stable across re-runs, do not move
when files are added, and identical files always land in the same split (no leakage).
"""

from __future__ import annotations

import hashlib
import json
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


def assign_split(key: str, val_fraction: float, test_fraction: float) -> str:
    """Map a content hash to a split; stable for a given key and fractions."""
    bucket = int(key[:12], 16) / float(16**12)
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def fingerprint_items(items: list[Item]) -> str:
    """A hash of the dataset's contents, labels and split; changes when any of them does."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda it: (it.key, it.label)):
        digest.update(f"{item.key}\t{item.label}\t{item.split}\n".encode())
    return digest.hexdigest()[:16]
