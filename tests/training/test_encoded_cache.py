"""Splits encoded once into `.npy` rows: equal to the encoder's output, reused, rebuilt when
stale, skipped when too large, and read by the loaders exactly as fresh encodings are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mlfactory.config.loader import load_recipe_from_dict, preprocessing_params
from mlfactory.data.dataset import Item
from mlfactory.modalities import Encoder, get_modality
from mlfactory.training.datamodule import ClassificationData
from mlfactory.training.encoded_cache import EncodedCache, EncodedRows, cache_key
from mlfactory.training.train import TrainResult
from tests.training_path import training_inputs


def digits_encoder(result: TrainResult) -> Encoder:
    return training_inputs(result, []).encoder


def digits_cache(result: TrainResult, root: Path, **changes: object) -> EncodedCache:
    config = load_recipe_from_dict(result.bundle.meta.config).config
    settings: dict[str, object] = {
        "root": root,
        "max_gb": 1.0,
        "modality": "image",
        "params": preprocessing_params(config),
        "assets": [],
        **changes,
    }
    return EncodedCache(**settings)  # type: ignore[arg-type]


def assert_rows_are_encodings(rows: EncodedRows, items: list[Item], encoder: Encoder) -> None:
    assert len(rows) == len(items)
    for index, item in enumerate(items):
        fresh = encoder(item.read_bytes())
        stored = rows.row(index)
        assert stored.keys() == fresh.keys()
        for name in fresh:
            assert stored[name].dtype == fresh[name].dtype
            np.testing.assert_array_equal(stored[name], fresh[name])


def test_rows_are_the_encoders_output_bit_for_bit(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    items = trained_digits.dataset.split("train")
    encoder = digits_encoder(trained_digits)
    rows = digits_cache(trained_digits, tmp_path).rows(items, encoder, "train")
    assert rows is not None
    assert_rows_are_encodings(rows, items, encoder)
    # One plain .npy per model input, readable without pickle, and nothing left half-built.
    (folder,) = tmp_path.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["encoded.json", "pixel_values.npy"]
    array = np.load(folder / "pixel_values.npy", allow_pickle=False)
    assert array.shape == (len(items), 3, 32, 32) and array.dtype == np.float32


def test_worker_processes_build_the_same_rows(trained_digits: TrainResult, tmp_path: Path) -> None:
    items = trained_digits.dataset.split("val")
    encoder = digits_encoder(trained_digits)
    alone = digits_cache(trained_digits, tmp_path / "alone").rows(items, encoder, "val")
    shared = digits_cache(trained_digits, tmp_path / "two", workers=2).rows(items, encoder, "val")
    assert alone is not None and shared is not None
    np.testing.assert_array_equal(alone.arrays()["pixel_values"], shared.arrays()["pixel_values"])


def test_a_second_run_reuses_the_rows_and_other_settings_get_their_own(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    items = trained_digits.dataset.split("val")
    encoder = digits_encoder(trained_digits)
    cache = digits_cache(trained_digits, tmp_path)
    first = cache.rows(items, encoder, "val")
    assert first is not None
    written = (first.folder / "pixel_values.npy").stat().st_mtime_ns
    again = cache.rows(items, encoder, "val")
    assert again is not None and again.folder == first.folder
    assert (again.folder / "pixel_values.npy").stat().st_mtime_ns == written
    assert cache.notes[0].startswith("val split encoded once (")
    assert cache.notes[1] == f"val split reused ({first.folder.name})"
    # The key covers the items in order, the preprocessing and the encoder's files.
    params = cache.params
    assert cache_key("image", params, [], items) != cache_key("image", params, [], items[::-1])
    assert cache_key("image", params, [], items) != cache_key(
        "image", {**params, "crop_size": 28}, [], items
    )
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text('{"a": 1}')
    before = cache_key("text", params, [tokenizer], items)
    tokenizer.write_text('{"a": 2}')
    assert cache_key("text", params, [tokenizer], items) != before


def test_stale_rows_are_encoded_again(trained_digits: TrainResult, tmp_path: Path) -> None:
    items = trained_digits.dataset.split("val")
    encoder = digits_encoder(trained_digits)
    cache = digits_cache(trained_digits, tmp_path)
    rows = cache.rows(items, encoder, "val")
    assert rows is not None
    # As if the encoder had changed since: the stored first row no longer matches it.
    stored = np.load(rows.folder / "pixel_values.npy", mmap_mode="r+")
    stored[0] += 1.0
    stored.flush()
    del stored
    rebuilt = cache.rows(items, encoder, "val")
    assert rebuilt is not None
    assert_rows_are_encodings(rebuilt, items, encoder)


def test_too_large_or_switched_off_encodes_every_epoch(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    items = trained_digits.dataset.split("train")
    encoder = digits_encoder(trained_digits)
    # 3 x 32 x 32 float32 = 12,288 bytes per digit: a limit of 1 kB is far too small.
    tiny = digits_cache(trained_digits, tmp_path, max_gb=1e-6)
    assert tiny.rows(items, encoder, "train") is None
    megabytes = len(items) * 12_288 / 1e6
    assert tiny.notes == [
        f"train split encoded every epoch: it would take {megabytes:.1f} MB, over "
        "trainer.encoded_cache_gb=1e-06 (raise it to encode it once)"
    ]
    assert digits_cache(trained_digits, tmp_path, max_gb=0).rows(items, encoder, "train") is None
    assert not any(tmp_path.iterdir())


def test_items_of_different_shapes_are_not_cached(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    items = trained_digits.dataset.split("val")
    encoder = digits_encoder(trained_digits)
    last = items[-1].path

    def uneven(raw: bytes) -> dict[str, np.ndarray]:
        arrays = encoder(raw)
        if raw == Path(str(last)).read_bytes():
            return {name: a[:, :16] for name, a in arrays.items()}
        return arrays

    assert digits_cache(trained_digits, tmp_path).rows(items, uneven, "val") is None
    assert not any(tmp_path.iterdir())


def test_a_finished_build_of_another_process_is_used(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    items = trained_digits.dataset.split("val")
    encoder = digits_encoder(trained_digits)
    cache = digits_cache(trained_digits, tmp_path)
    rows = cache.rows(items, encoder, "val")
    assert rows is not None
    from mlfactory.training.encoded_cache import _build

    # Its rename finds the folder in place (another trial or machine finished first): no error.
    again = _build(items, encoder, rows.folder, encoder(items[0].read_bytes()), 0)
    assert again is not None
    assert_rows_are_encodings(again, items, encoder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [rows.folder.name]


def epochs_of_batches(data: ClassificationData, epochs: int) -> list[torch.Tensor]:
    loader = data.train_dataloader()
    try:
        return [inputs["pixel_values"] for _ in range(epochs) for inputs, _ in loader]
    finally:
        del loader


def test_loaders_over_rows_give_the_batches_of_fresh_encoding(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """Same seed, same flips, same tensors: the cache changes where inputs come from, not them."""
    encoder = digits_encoder(trained_digits)
    flip = get_modality("image").augmentation()

    def data(cache: EncodedCache | None) -> ClassificationData:
        loaders = ClassificationData(
            trained_digits.dataset, encoder, 8, num_workers=2, augment=flip, seed=3, cache=cache
        )
        loaders.setup("fit")
        return loaders

    cached = data(digits_cache(trained_digits, tmp_path))
    assert cached.rows["train"] is not None and cached.rows["val"] is not None
    assert cached.split_dataset("train").rows is cached.rows["train"]
    fresh = data(None)
    assert fresh.split_dataset("train").rows is None
    from_rows, from_files = epochs_of_batches(cached, 2), epochs_of_batches(fresh, 2)
    assert len(from_rows) == len(from_files) > 2
    for a, b in zip(from_rows, from_files, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Augmentation still happens per epoch on the stored rows: the epochs' flips differ.
    per_epoch = len(from_rows) // 2
    assert any(
        not torch.equal(a, b)
        for a, b in zip(from_rows[:per_epoch], from_rows[per_epoch:], strict=True)
    )


def test_training_encodes_its_splits_once_in_the_data_cache(trained_digits: TrainResult) -> None:
    config = load_recipe_from_dict(trained_digits.bundle.meta.config).config
    root = Path(config.data.cache_dir) / "encoded"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    sizes = sorted(int(np.load(p / "pixel_values.npy", mmap_mode="r").shape[0]) for p in folders)
    dataset = trained_digits.dataset
    assert len(dataset.split("val")) in sizes and len(dataset.split("train")) in sizes


def test_a_smoke_run_reading_part_of_a_split_does_not_encode_all_of_it(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    encoder = digits_encoder(trained_digits)
    train_items = len(trained_digits.dataset.split("train"))
    data = ClassificationData(
        trained_digits.dataset,
        encoder,
        8,
        cache=digits_cache(trained_digits, tmp_path),
        # trainer.limit_train_batches=2: 16 of the split's items an epoch; val read in full.
        batch_limits={"train": 2, "val": 1000},
    )
    assert train_items > 16
    data.prepare_data()
    data.setup("fit")
    assert "train" not in data.rows and data.rows["val"] is not None
    assert data.split_dataset("train").rows is None
    assert len(list(tmp_path.iterdir())) == 1  # the validation split's rows only


def test_the_cache_keeps_within_its_limit_by_removing_the_least_recently_used(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    train = trained_digits.dataset.split("train")
    encoder = digits_encoder(trained_digits)
    a, b, c = train[:10], train[10:20], train[20:30]  # three different "splits" of 10 digits
    one = 10 * 3 * 32 * 32 * 4 + 1000  # their rows, the .npy header and encoded.json
    limit_gb = 2.5 * one / 1e9  # room for two

    def run(items: list[Item]) -> EncodedRows:
        cache = digits_cache(trained_digits, tmp_path, max_gb=limit_gb)
        rows = cache.rows(items, encoder, "x")
        assert rows is not None
        notes.extend(cache.notes)
        return rows

    notes: list[str] = []
    folder_a, folder_b = run(a).folder, run(b).folder
    os.utime(folder_a / "encoded.json", ns=(1, 1_000_000_000))
    os.utime(folder_b / "encoded.json", ns=(1, 2_000_000_000))
    assert run(a).folder == folder_a  # reused: now the most recently used
    folder_c = run(c).folder
    assert notes[-1] == (
        "removed the 1 least recently used split(s) (0.1 MB) to keep within "
        f"trainer.encoded_cache_gb={limit_gb:g}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder_a.name, folder_c.name])
    assert_rows_are_encodings(EncodedRows(folder_a, ["pixel_values"]), a, encoder)


def test_a_run_never_removes_its_own_splits(trained_digits: TrainResult, tmp_path: Path) -> None:
    train = trained_digits.dataset.split("train")
    encoder = digits_encoder(trained_digits)
    one = 10 * 3 * 32 * 32 * 4 + 1000
    cache = digits_cache(trained_digits, tmp_path, max_gb=1.5 * one / 1e9)  # room for one
    assert cache.rows(train[:10], encoder, "train") is not None
    assert cache.rows(train[10:20], encoder, "val") is None
    assert (
        "val split encoded every epoch: it would take 0.1 MB beside the 0.1 MB of the other "
        "split, over trainer.encoded_cache_gb=" in cache.notes[-1]
    )
    assert len(list(tmp_path.iterdir())) == 1
