"""What a training run needs of its prepared data before it starts, checked without torch (the
CLI runs it before importing the training stack; `prepare_fit` runs it too)."""

from __future__ import annotations

from mlfactory.config.schema import DataConfig
from mlfactory.data.dataset import PreparedDataset
from mlfactory.errors import DataError

# The splits a run cannot do without: the data key that sizes each, the items a class needs
# before the split gets one of them (docs/data.md, "Small classes"), what the run does with it.
NEEDED_SPLITS = {
    "val": (
        "val_fraction",
        3,
        "training picks its best epoch and stops early on it, and monitoring is calibrated on it",
    ),
    "test": (
        "test_fraction",
        2,
        "the exported model is checked against PyTorch on it and evaluated on it",
    ),
}


def check_splits(dataset: PreparedDataset, data: DataConfig) -> None:
    """Refuse a dataset whose validation or test split is empty: the run would stop with a
    traceback at its first validation or at the export.

    Raises:
        DataError: a needed split is empty; says which setting (or which classes) to change.
    """
    for split, (key, smallest, use) in NEEDED_SPLITS.items():
        if dataset.split(split):
            continue
        fraction = getattr(data, key)
        if fraction <= 0:
            why, fix = f"data.{key}=0 leaves no {split} split", f"set data.{key} above 0"
        else:
            why = f"data.{key}={fraction} gave the {split} split no item"
            fix = f"give some class at least {smallest} items (or raise data.max_per_class)"
        raise DataError(f"{why}, which a training run needs: {use}; {fix}")
