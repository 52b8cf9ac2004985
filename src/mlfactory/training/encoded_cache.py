"""Encoded inputs kept on disk, so that each item is read and encoded once, not every epoch.

Training reads every item through the serving encoder (`EncodedDataset`): decode, resize and
normalise an image, decode, resample and log-mel a clip, tokenize a text. Without augmentation
in the encoder, its output for an item never changes, yet a loader recomputes it every epoch:
on 2 CPU cores that is 20 % of an epoch of the `emotions` recipe and 60 % of `birdcalls`, and
on a GPU it is what the model waits for (docs/benchmarks.md). So a split is encoded once into
one `.npy` array per model input (rows in the split's order), and the loaders read rows from
them, memory-mapped: the page cache holds them once for every data-loader worker. Augmentation
still runs per item and per epoch, on a copy of the row.

A cache folder is named by a hash of everything the rows depend on: the modality, the
preprocessing parameters, the bytes of the encoder's asset files (a tokenizer), mlfactory's
version and the content keys of the split's items in order. Another recipe or a sweep's next
trial over the same data and preprocessing reuses it; anything else gets its own folder. On
reuse, the first and last rows are encoded again and must equal the stored ones bit for bit,
else the folder is rebuilt (an encoder changed in a development install). Arrays are plain
`.npy` files read with `allow_pickle=False`.

`trainer.encoded_cache_gb` bounds the whole cache: a run caches a split only if it fits beside
the run's other split, and after encoding one it removes the folders used least recently (the
time their `encoded.json` was last written or reused) until the cache fits again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from mlfactory import __version__
from mlfactory.data.dataset import Item
from mlfactory.modalities import Encoder

log = logging.getLogger(__name__)

META_FILE = "encoded.json"
BYTES_PER_GB = 1e9


def cache_key(modality: str, params: dict[str, Any], assets: list[Path], items: list[Item]) -> str:
    """The name of the folder holding these items encoded with these settings."""
    digest = hashlib.sha256()
    header = {"modality": modality, "params": params, "mlfactory": __version__}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for asset in sorted(assets):
        for path in sorted(asset.rglob("*")) if asset.is_dir() else [asset]:
            if path.is_file():
                digest.update(path.name.encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    for item in items:
        digest.update(item.key.encode())
    return digest.hexdigest()[:24]


class EncodedRows:
    """A split's encoded inputs on disk: `row(i)` is item i as the encoder returns it.

    Only the folder travels to data-loader workers (spawned ones too); each process maps the
    arrays itself on first use.
    """

    def __init__(self, folder: Path, names: list[str]) -> None:
        self.folder = folder
        self.names = names
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "names": self.names, "_arrays": None}

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {
                name: np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                for name in self.names
            }
        return self._arrays

    def __len__(self) -> int:
        return int(next(iter(self.arrays().values())).shape[0])

    def row(self, index: int) -> dict[str, np.ndarray]:
        """Item `index`'s arrays, copied (augmentation may change them)."""
        return {name: np.array(array[index]) for name, array in self.arrays().items()}


@dataclass
class EncodedCache:
    """Where and within what size training keeps splits encoded.

    `max_gb` bounds the whole folder `root`: after a split is encoded, the splits used least
    recently (by any run) are removed until the folder fits again, never one this run uses.
    """

    root: Path  # `<data.cache_dir>/encoded`
    max_gb: float  # trainer.encoded_cache_gb; 0 turns caching off
    modality: str
    params: dict[str, Any]  # the preprocessing parameters
    assets: list[Path]  # the encoder's files (a tokenizer)
    workers: int = 0  # trainer.num_workers: processes that encode a new split
    in_use: set[Path] = field(default_factory=set, init=False)  # this run's folders
    notes: list[str] = field(default_factory=list, init=False)  # what `rows` did, in order

    def rows(self, items: list[Item], encoder: Encoder, split: str) -> EncodedRows | None:
        """The split's encoded rows, encoded now if they are not on disk yet.

        None when the split would not fit within `max_gb` beside this run's other splits, or
        its items encode to arrays of different shapes: the loader then encodes every item every
        epoch. What was done is added to `notes`.
        """
        if self.max_gb <= 0 or not items:
            return None
        folder = self.root / cache_key(self.modality, self.params, self.assets, items)
        cached = _reuse(folder, items, encoder)
        if cached is not None:
            os.utime(folder / META_FILE)  # used now: the last to be removed
            self.in_use.add(folder)
            self._note(f"{split} split reused ({folder.name})")
            return cached
        shutil.rmtree(folder, ignore_errors=True)  # incomplete, or from another encoder
        started = time.perf_counter()
        first = encoder(items[0].read_bytes())
        size = len(items) * sum(array.nbytes for array in first.values())
        in_use = sum(folder_bytes(used) for used in self.in_use)
        if in_use + size > self.max_gb * BYTES_PER_GB:
            beside = f" beside the {_size(in_use)} of the other split" if in_use else ""
            self._note(
                f"{split} split encoded every epoch: it would take {_size(size)}"
                f"{beside}, over trainer.encoded_cache_gb={self.max_gb:g} (raise it to encode "
                "it once)"
            )
            return None
        rows = _build(items, encoder, folder, first, self.workers)
        if rows is None:
            self._note(
                f"{split} split encoded every epoch: its items encode to arrays of different shapes"
            )
            return None
        self.in_use.add(folder)
        self._note(
            f"{split} split encoded once ({len(items)} items, {_size(size)}, "
            f"{time.perf_counter() - started:.1f} s)"
        )
        removed, freed = evict(self.root, self.max_gb * BYTES_PER_GB, self.in_use)
        if removed:
            self._note(
                f"removed the {removed} least recently used split(s) ({_size(freed)}) to keep"
                f" within trainer.encoded_cache_gb={self.max_gb:g}"
            )
        return rows

    def _note(self, note: str) -> None:
        log.debug("encoded inputs: %s", note)
        self.notes.append(note)


def _size(size: float) -> str:
    return f"{size / BYTES_PER_GB:.1f} GB" if size >= BYTES_PER_GB else f"{size / 1e6:.1f} MB"


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in `folder` (0 if it is gone)."""
    try:
        return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
    except OSError:
        return 0


def evict(root: Path, max_bytes: float, keep: set[Path]) -> tuple[int, int]:
    """Remove the least recently used complete folders of `root` (by the time their
    `encoded.json` was last written or touched) until the rest take at most `max_bytes`,
    never one in `keep`. Folders still being built are neither counted nor removed.

    Returns:
        (folders removed, bytes freed).
    """
    folders = [f for f in root.iterdir() if (f / META_FILE).is_file()] if root.is_dir() else []
    sizes = {folder: folder_bytes(folder) for folder in folders}
    total = sum(sizes.values())
    removed = freed = 0
    for folder in sorted(folders, key=lambda f: (f / META_FILE).stat().st_mtime_ns):
        if total <= max_bytes:
            break
        if folder in keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        removed += 1
        freed += sizes[folder]
    return removed, freed


def _reuse(folder: Path, items: list[Item], encoder: Encoder) -> EncodedRows | None:
    """The rows already in `folder`, if complete and equal to the encoder's output now."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        rows = EncodedRows(folder, list(meta["names"]))
        if len(rows) != len(items):
            return None
        for index in {0, len(items) - 1}:
            stored, fresh = rows.row(index), encoder(items[index].read_bytes())
            if stored.keys() != fresh.keys() or not all(
                np.array_equal(stored[name], fresh[name]) for name in fresh
            ):
                return None
    except (OSError, ValueError, KeyError):
        return None
    return rows


def _build(
    items: list[Item],
    encoder: Encoder,
    folder: Path,
    first: dict[str, np.ndarray],
    workers: int,
) -> EncodedRows | None:
    """Encode every item into `.npy` arrays in a private folder, then move it into place.

    Concurrent builders (two trials started at once, the machines of a multi-node job sharing
    the cache) each write their own folder; the first to finish moves its folder into place and
    the others use it.
    """
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        arrays = {
            name: np.lib.format.open_memmap(
                building / f"{name}.npy", mode="w+", dtype=a.dtype, shape=(len(items), *a.shape)
            )
            for name, a in first.items()
        }
        for index, encoded in enumerate(_encoded(items, encoder, first, workers)):
            if encoded.keys() != arrays.keys() or any(
                encoded[name].shape != arrays[name].shape[1:] for name in arrays
            ):
                return None
            for name, array in encoded.items():
                arrays[name][index] = array
        for array in arrays.values():
            array.flush()
        del arrays
        meta = {"names": list(first), "items": len(items), "mlfactory": __version__}
        (building / META_FILE).write_text(json.dumps(meta))
        try:
            building.rename(folder)
        except OSError:  # another builder got there first: its rows are the same
            if not (folder / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return EncodedRows(folder, list(first))


def _encoded(
    items: list[Item], encoder: Encoder, first: dict[str, np.ndarray], workers: int
) -> Iterator[dict[str, np.ndarray]]:
    """Each item's arrays in order: `first`, then the others (in `workers` processes)."""
    yield first
    if workers == 0:
        for item in items[1:]:
            yield encoder(item.read_bytes())
        return
    loader: DataLoader[dict[str, np.ndarray]] = DataLoader(
        _ToEncode(items[1:], encoder), batch_size=None, num_workers=workers, collate_fn=_as_is
    )
    yield from loader


class _ToEncode(Dataset[dict[str, np.ndarray]]):
    """Items as a dataset of their encoded arrays, for a DataLoader's worker processes."""

    def __init__(self, items: list[Item], encoder: Encoder) -> None:
        self.items = items
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.encoder(self.items[index].read_bytes())


def _as_is(arrays: Any) -> Any:
    return arrays
