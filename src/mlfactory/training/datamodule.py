"""Torch datasets over a PreparedDataset, encoded by the modality's serving encoder."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mlfactory.data.dataset import Item, PreparedDataset
from mlfactory.modalities import Augment, Encoder


class EncodedDataset(Dataset[tuple[dict[str, torch.Tensor], int]]):
    """Items read from disk and encoded exactly as the server encodes an upload."""

    def __init__(
        self,
        items: list[Item],
        encoder: Encoder,
        label_index: dict[str, int],
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.items = items
        self.encoder = encoder
        self.label_index = label_index
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        item = self.items[index]
        arrays = self.encoder(item.read_bytes())
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
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.encoder = encoder
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed

    def split_dataset(self, split: str, augment: Augment | None = None) -> EncodedDataset:
        return EncodedDataset(
            self.dataset.split(split), self.encoder, self.dataset.label_index(), augment, self.seed
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
