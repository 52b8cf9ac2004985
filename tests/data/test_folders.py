"""Class-folder scanning, layout unwrapping and the cheap tree signature."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlfactory.data.folders import scan_class_folder, suffixes_for, tree_signature, unwrap
from mlfactory.errors import DataError
from mlfactory.modalities.audio import FILE_SUFFIXES as AUDIO_FILE_SUFFIXES


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

    found = scan_class_folder(tmp_path, "image")

    assert sorted((i.label, Path(i.origin).name) for i in found.items) == [
        ("agaric", "a.JPG"),
        ("agaric", "b.png"),
        ("bolete", "c.jpeg"),
    ]
    assert found.skipped == []


def test_split_folders_are_merged_into_classes(tmp_path: Path) -> None:
    _put(tmp_path / "train" / "cat" / "1.png")
    _put(tmp_path / "train" / "dog" / "2.png")
    _put(tmp_path / "Test" / "dog" / "3.png")
    _put(tmp_path / "valid" / "cat" / "4.png")

    found = scan_class_folder(tmp_path, "image")

    assert sorted((i.label, Path(i.origin).name) for i in found.items) == [
        ("cat", "1.png"),
        ("cat", "4.png"),
        ("dog", "2.png"),
        ("dog", "3.png"),
    ]


def test_text_folders_read_txt_files_and_skip_non_utf8(tmp_path: Path) -> None:
    _put(tmp_path / "pos" / "1.txt", b"a fine film")
    _put(tmp_path / "neg" / "2.txt", b"\xff\xfe broken")

    found = scan_class_folder(tmp_path, "text")

    assert [(i.label, i.text) for i in found.items] == [("pos", "a fine film")]
    assert found.skipped[0]["path"] == str(tmp_path / "neg" / "2.txt")
    assert "UTF-8" in found.skipped[0]["reason"]


def test_audio_suffixes_are_what_the_audio_decoder_reads() -> None:
    # Training folders take every format serving accepts, and no other.
    assert suffixes_for("audio") == AUDIO_FILE_SUFFIXES
    assert {".wav", ".flac", ".ogg", ".mp3"} <= set(suffixes_for("audio"))
    with pytest.raises(DataError, match=r"unknown modality 'video'"):
        suffixes_for("video")


def test_unwrap_descends_through_single_folders_only(tmp_path: Path) -> None:
    _put(tmp_path / "Mushrooms" / "Mushrooms" / "a" / "1.png")
    _put(tmp_path / "Mushrooms" / "Mushrooms" / "b" / "2.png")
    _put(tmp_path / "Mushrooms" / "README.md")
    _put(tmp_path / "__MACOSX" / "junk")
    assert unwrap(tmp_path) == tmp_path / "Mushrooms" / "Mushrooms"
    assert unwrap(tmp_path / "Mushrooms" / "Mushrooms") == tmp_path / "Mushrooms" / "Mushrooms"


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
