"""Torch datasets over a PreparedDataset, encoded by the modality's serving encoder.

The train and validation splits are encoded once into an on-disk cache when they fit
(`encoded_cache`); the loaders then read rows instead of files.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.modalities import Augment, Encoder
from mlfactory.output import phase_log
from mlfactory.training.encoded_cache import EncodedCache, EncodedRows


class EncodedDataset(Dataset[tuple[dict[str, torch.Tensor], int]]):
    """Items encoded exactly as the server encodes an upload: read from disk and encoded, or
    read from the rows they were encoded into once (`rows`)."""

    def __init__(
        self,
        items: list[Item],
        encoder: Encoder,
        label_index: dict[str, int],
        augment: Augment | None = None,
        seed: int = 0,
        rows: EncodedRows | None = None,
    ) -> None:
        self.items = items
        self.encoder = encoder
        self.label_index = label_index
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        item = self.items[index]
        arrays = self.rows.row(index) if self.rows is not None else self.encoder(item.read_bytes())
        if self.augment is not None:
            arrays = self.augment(arrays, self.rng)
        tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
        return tensors, self.label_index[item.label]


def seed_worker(worker_id: int) -> None:
    """Give each data-loader worker its own augmentation stream.

    Every worker starts with a copy of the dataset, random generator included: unseeded, all of
    them would draw the same flips and masks. torch gives each worker a distinct seed derived
    from the loader's seeded generator, so the streams differ yet a rerun repeats them.
    """
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, EncodedDataset):
        info.dataset.rng = np.random.default_rng(info.seed)


class ClassificationData(L.LightningDataModule):
    """Train/val/test loaders over one prepared dataset."""

    def __init__(
        self,
        dataset: PreparedDataset,
        encoder: Encoder,
        batch_size: int,
        num_workers: int = 0,
        augment: Augment | None = None,
        seed: int = 0,
        cache: EncodedCache | None = None,
        batch_limits: dict[str, int | None] | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.encoder = encoder
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed
        self.cache = cache
        # trainer.limit_train_batches / limit_val_batches: a smoke run that reads a part of a
        # split each epoch does not encode all of it first.
        self.batch_limits = batch_limits or {}
        self.rows: dict[str, EncodedRows | None] = {}

    def prepare_data(self) -> None:
        """Encode the train and validation splits once, if not done before and they fit; say
        what was done in one line.

        Lightning calls this in one process per machine and makes the others wait for it.
        """
        if self.cache is None:
            return
        self.cache.notes.clear()
        for split in self._cached_splits():
            self.rows[split] = self.cache.rows(self.dataset.split(split), self.encoder, split)
        if self.cache.notes:
            phase_log.info(
                "data: encoded inputs in %s: %s", self.cache.root, "; ".join(self.cache.notes)
            )

    def setup(self, stage: str) -> None:
        """Every other process opens the rows that `prepare_data` wrote."""
        if stage != "fit" or self.cache is None:
            return
        for split in self._cached_splits():
            if split not in self.rows:
                self.rows[split] = self.cache.rows(self.dataset.split(split), self.encoder, split)

    def _cached_splits(self) -> list[str]:
        """The splits to encode once: train and val, unless caching is off or an epoch reads
        only a part of the split (`batch_limits`)."""
        if self.cache is None:
            return []
        splits = []
        for split in ("train", "val"):
            limit = self.batch_limits.get(split)
            if limit is None or limit * self.batch_size >= len(self.dataset.split(split)):
                splits.append(split)
        return splits

    def split_dataset(self, split: str, augment: Augment | None = None) -> EncodedDataset:
        return EncodedDataset(
            self.dataset.split(split),
            self.encoder,
            self.dataset.label_index(),
            augment,
            self.seed,
            self.rows.get(split),
        )

    def _loader(self, split: str, shuffle: bool, augment: Augment | None = None) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.split_dataset(split, augment),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=generator,
            worker_init_fn=seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, augment=self.augment)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
