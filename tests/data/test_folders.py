"""Class-folder scanning, layout unwrapping and the cheap tree signature."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mlfactory.data.folders import (
    LINKED_FOLDER,
    NOT_IN_CLASS,
    iter_files,
    scan_class_folder,
    tree_signature,
    unwrap,
)
from mlfactory.modalities import get_modality
from mlfactory.modalities.audio import FILE_SUFFIXES as AUDIO_FILE_SUFFIXES
from tests.unreadable import deny_listing

from .replacing import replace_keeping_size_and_mtime

IMAGE, TEXT, AUDIO = (get_modality(name) for name in ("image", "text", "audio"))


def _put(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_nested_files_count_for_their_top_level_class(tmp_path: Path) -> None:
    _put(tmp_path / "agaric" / "a.JPG")
    _put(tmp_path / "agaric" / "field" / "2024" / "b.png")
    _put(tmp_path / "bolete" / "c.jpeg")
    _put(tmp_path / "bolete" / "notes.txt")  # not an image suffix
    _put(tmp_path / "bolete" / ".hidden.png")
    _put(tmp_path / ".cache" / "d.png")  # hidden folder: not a class
    _put(tmp_path / "__MACOSX" / "e.png")
    _put(tmp_path / "stray.png")  # not in a class folder

    found = scan_class_folder(tmp_path, IMAGE)

    assert sorted((i.label, Path(i.origin).name) for i in found.items) == [
        ("agaric", "a.JPG"),
        ("agaric", "b.png"),
        ("bolete", "c.jpeg"),
    ]
    assert found.skipped == [{"path": str(tmp_path / "stray.png"), "reason": NOT_IN_CLASS}]


def test_a_folder_that_cannot_be_read_is_a_skipped_entry(
    digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole class folder, or a folder deeper in one, that cannot be listed is reported as
    an unreadable file is; the files that can be read are still found."""
    shutil.copytree(digit_folder / "0", tmp_path / "0")
    shutil.copytree(digit_folder / "1", tmp_path / "1")
    shutil.copytree(digit_folder / "2", tmp_path / "2" / "scans")
    shutil.copytree(digit_folder / "3", tmp_path / "2" / "more")
    before = tree_signature(tmp_path)
    deny_listing(monkeypatch, tmp_path / "1")
    deny_listing(monkeypatch, tmp_path / "2" / "more")

    found = scan_class_folder(tmp_path, IMAGE)

    assert found.skipped == [
        {"path": str(tmp_path / "1"), "reason": "cannot read folder: Permission denied"},
        {"path": str(tmp_path / "2" / "more"), "reason": "cannot read folder: Permission denied"},
    ]
    assert {i.label for i in found.items} == {"0", "2"}
    assert sorted(Path(i.origin) for i in found.items) == sorted(
        [*(tmp_path / "0").glob("*.png"), *(tmp_path / "2" / "scans").glob("*.png")]
    )
    assert tree_signature(tmp_path) != before  # a cached dataset is not reused silently
    with pytest.raises(PermissionError):  # no callback: the walk stops, it skips nothing
        list(iter_files(tmp_path))


def test_a_class_of_files_of_other_kinds_only_is_reported_not_dropped_silently(
    make_digit_folder: Callable[..., Path],
) -> None:
    folder = make_digit_folder({"1": 3, "2": 3})
    (folder / "birds").mkdir()
    for name in ("a.heic", "b.HEIC", "notes"):
        (folder / "birds" / name).write_bytes(b"not read")

    found = scan_class_folder(folder, get_modality("image"))

    assert {item.label for item in found.items} == {"1", "2"}
    assert found.skipped == [
        {
            "path": str(folder / "birds"),
            "reason": "class 'birds' has no image file, only other kinds (.heic, no suffix)",
        }
    ]


def test_a_link_to_a_folder_is_reported_and_not_followed(
    make_digit_folder: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_digit_folder({"1": 3, "2": 3})
    elsewhere = make_digit_folder({"1": 2}, name="elsewhere", start=3)
    (folder / "1" / "more").symlink_to(elsewhere / "1", target_is_directory=True)
    (folder / "2" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "2" / "linked.png").symlink_to(next((elsewhere / "1").iterdir()))

    found = scan_class_folder(folder, get_modality("image"))

    assert sorted(item.label for item in found.items) == ["1"] * 3 + ["2"] * 4  # a linked file
    assert found.skipped == [
        {"path": str(folder / "1" / "more"), "reason": LINKED_FOLDER},
        {"path": str(folder / "2" / "loop"), "reason": LINKED_FOLDER},
    ]


def test_split_folders_are_merged_into_classes(tmp_path: Path) -> None:
    _put(tmp_path / "train" / "cat" / "1.png")
    _put(tmp_path / "train" / "dog" / "2.png")
    _put(tmp_path / "Test" / "dog" / "3.png")
    _put(tmp_path / "valid" / "cat" / "4.png")

    found = scan_class_folder(tmp_path, IMAGE)

    assert sorted((i.label, Path(i.origin).name) for i in found.items) == [
        ("cat", "1.png"),
        ("cat", "4.png"),
        ("dog", "2.png"),
        ("dog", "3.png"),
    ]


def test_a_class_named_in_decomposed_unicode_is_the_composed_class(tmp_path: Path) -> None:
    """macOS stores names decomposed (e + combining accent): copied to Linux, `café` would
    otherwise be two classes that look the same, and unlike the same label in a table."""
    decomposed, composed = "cafe\u0301", "caf\u00e9"
    _put(tmp_path / decomposed / "1.txt", b"an espresso, standing at the bar")
    _put(tmp_path / composed / "2.txt", b"a croissant with the coffee")
    _put(tmp_path / "bar" / "3.txt", b"a beer after work")

    found = scan_class_folder(tmp_path, TEXT)

    assert sorted((i.label, Path(i.origin).name) for i in found.items) == [
        ("bar", "3.txt"),
        (composed, "1.txt"),
        (composed, "2.txt"),
    ]


def test_text_folders_hold_one_text_per_txt_file(tmp_path: Path) -> None:
    _put(tmp_path / "pos" / "1.txt", b"a fine film")
    _put(tmp_path / "neg" / "2.txt", b"\xff\xfe broken")  # refused later, by the text check
    _put(tmp_path / "neg" / "3.md", b"# not a .txt file")

    found = scan_class_folder(tmp_path, TEXT)

    assert [(i.label, Path(i.origin).name) for i in found.items] == [
        ("neg", "2.txt"),
        ("pos", "1.txt"),
    ]


def test_audio_suffixes_are_what_the_audio_decoder_reads() -> None:
    # Training folders take every format serving accepts, and no other.
    assert AUDIO.file_suffixes == AUDIO_FILE_SUFFIXES
    assert {".wav", ".flac", ".ogg", ".mp3"} <= set(AUDIO.file_suffixes)


def test_unwrap_descends_through_single_folders_only(tmp_path: Path) -> None:
    _put(tmp_path / "Mushrooms" / "Mushrooms" / "a" / "1.png")
    _put(tmp_path / "Mushrooms" / "Mushrooms" / "b" / "2.png")
    _put(tmp_path / "Mushrooms" / "README.md")
    _put(tmp_path / "__MACOSX" / "junk")
    assert unwrap(tmp_path) == tmp_path / "Mushrooms" / "Mushrooms"
    assert unwrap(tmp_path / "Mushrooms" / "Mushrooms") == tmp_path / "Mushrooms" / "Mushrooms"


@pytest.mark.parametrize("how", ["cp -p", "mv"])
@pytest.mark.parametrize("layout", ["folder", "file"])
def test_a_file_replaced_with_its_size_and_mtime_kept_changes_the_signature(
    how: str, layout: str, tmp_path: Path
) -> None:
    """A file replaced by another of the same size with its mtime kept, by the real `cp -p`
    (the inode kept, the ctime not) or `mv` (another inode): in a folder, or the source itself
    (a table). Its signature changes once, then holds."""
    clip = _put(tmp_path / "data" / "a" / "1.csv", b"text,label\nhello,a\n")
    root = tmp_path / "data" if layout == "folder" else clip
    before = tree_signature(root)
    replace_keeping_size_and_mtime(clip, b"text,label\njello,a\n", how, tmp_path / "scratch")
    after = tree_signature(root)
    assert after != before
    assert tree_signature(root) == after


def test_tree_signature_follows_names_sizes_and_mtimes(tmp_path: Path) -> None:
    clip = _put(tmp_path / "a" / "1.png", b"12345")
    before = tree_signature(tmp_path)
    assert tree_signature(tmp_path) == before

    os.utime(clip, ns=(1, 1))
    touched = tree_signature(tmp_path)
    assert touched != before

    _put(tmp_path / "a" / "notes.md")
    assert tree_signature(tmp_path, (".png",)) == touched  # other suffixes are not looked at
    assert tree_signature(tmp_path) != touched

    shutil.copy2(clip, tmp_path / "a" / "2.png")
    assert tree_signature(tmp_path, (".png",)) != touched
