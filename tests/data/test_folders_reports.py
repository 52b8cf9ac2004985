"""Class folders: names that are not UTF-8, and files beside the class folders, on real data."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.data.folders import (
    NOT_IN_CLASS,
    read_item_file,
    scan_class_folder,
    tree_signature,
)
from mlfactory.data.prepare import prepare_dataset
from mlfactory.errors import InputError
from mlfactory.modalities import get_modality

from .conftest import REUTERS_SAMPLE, MakeRecipe

IMAGE, TEXT = get_modality("image"), get_modality("text")
runner = CliRunner()
PUT = "put its image files in it"


def not_utf8(folder: Path, name: bytes) -> Path:
    """`folder/name`, a name that is not valid UTF-8 (as Python sees it: with surrogates)."""
    return folder / os.fsdecode(name)


def data_command(source: Path, tmp_path: Path, recipe: str = "digits"):  # type: ignore[no-untyped-def]
    args = ["data", recipe, f"data.source={source}", f"data.cache_dir={tmp_path / 'cache'}"]
    return runner.invoke(app, args)


def test_a_file_named_in_bytes_that_are_not_utf8_is_read(
    make_digit_folder: Callable[..., Path], make_recipe: MakeRecipe
) -> None:
    folder = make_digit_folder({"1": 3, "2": 3})
    extra = make_digit_folder({"2": 1}, name="extra", start=3)
    named = not_utf8(folder / "2", b"bad\xffname.png")
    shutil.copy(next((extra / "2").iterdir()), named)
    not_utf8(folder / "1", b"broken\xfe.png").write_bytes(b"not a png")
    before = tree_signature(folder)
    os.utime(named, ns=(1, 1))
    assert tree_signature(folder) != before  # its changes are seen

    dataset = prepare_dataset(make_recipe(folder))

    assert len(dataset.items) == 7 and str(named) in {item.path for item in dataset.items}
    assert [(s["path"], s["reason"][:12]) for s in dataset.skipped] == [
        (f"{folder / '1'}/broken\\xfe.png", "not an image"),  # shown with its bytes escaped
    ]


def test_a_class_folder_whose_name_is_not_utf8_is_one_error_line(
    make_digit_folder: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_digit_folder({"1": 3, "2": 3})
    shutil.copytree(folder / "2", not_utf8(folder, b"caf\xe9"))

    result = data_command(folder, tmp_path)

    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert f"'{folder}/caf\\xe9'" in lines[0] and "not valid UTF-8" in result.output
    assert "rename the folder" in result.output


def test_an_image_beside_the_class_folders_is_reported(
    make_digit_folder: Callable[..., Path], make_recipe: MakeRecipe, tmp_path: Path
) -> None:
    folder = make_digit_folder({"1": 3, "2": 3})
    stray = folder / "stray.png"
    shutil.copy(next((folder / "1").iterdir()), stray)
    (folder / "README.md").write_text("digits")  # not an image: ignored, as in a class folder
    (folder / "7").mkdir()

    result = data_command(folder, tmp_path)

    assert result.exit_code == 0, result.output
    assert "skipped 2 item(s)" in result.output
    assert prepare_dataset(make_recipe(folder)).skipped == [
        {
            "path": str(folder / "7"),
            "reason": "class '7' is an empty folder: put its image files in it",
        },
        {"path": str(stray), "reason": NOT_IN_CLASS},
    ]


def test_an_empty_class_folder_added_after_the_source_was_read_is_reported(
    make_digit_folder: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_digit_folder({"1": 3, "2": 3})
    before = tree_signature(folder, IMAGE.file_suffixes)
    assert data_command(folder, tmp_path).exit_code == 0
    (folder / "7").mkdir()

    assert tree_signature(folder, IMAGE.file_suffixes) != before  # the cached read is stale
    result = data_command(folder, tmp_path)

    assert result.exit_code == 0, result.output
    assert "skipped 1 item(s)" in result.output and "'7' is an empty folder" in result.output
    (folder / "7").rmdir()
    assert tree_signature(folder, IMAGE.file_suffixes) == before  # as it was without it


def test_an_image_beside_the_class_folders_of_a_split_is_reported(
    make_digit_folder: Callable[..., Path], tmp_path: Path
) -> None:
    root = tmp_path / "splits"
    make_digit_folder({"1": 3, "2": 3}, root=root / "train")
    make_digit_folder({"1": 1}, root=root / "val", start=3)
    stray = root / "val" / "loose.png"
    shutil.copy(next((root / "train" / "2").iterdir()), stray)

    found = scan_class_folder(root, IMAGE)

    assert sorted(i.label for i in found.items) == ["1"] * 4 + ["2"] * 3
    assert found.skipped == [{"path": str(stray), "reason": NOT_IN_CLASS}]


def test_a_text_beside_the_class_folders_is_reported(tmp_path: Path) -> None:
    lines = [json.loads(line)["text"] for line in REUTERS_SAMPLE.read_text().splitlines()]
    for index, line in enumerate(lines[:6]):
        folder = tmp_path / ("even" if index % 2 else "odd")
        folder.mkdir(exist_ok=True)
        (folder / f"{index}.txt").write_text(line)
    (tmp_path / "stray.txt").write_text(lines[6])

    found = scan_class_folder(tmp_path, TEXT)

    assert len(found.items) == 6
    assert found.skipped == [{"path": str(tmp_path / "stray.txt"), "reason": NOT_IN_CLASS}]


def test_named_pipes_and_devices_are_skipped_unread_and_big_files_refused(
    make_digit_folder: Callable[..., Path], make_recipe: MakeRecipe, tmp_path: Path
) -> None:
    folder = make_digit_folder({"1": 6, "7": 6})
    os.mkfifo(folder / "1" / "fifo.png")  # reading it would wait for a writer forever
    (folder / "7" / "zero.png").symlink_to("/dev/zero")  # reading it would never end

    dataset = prepare_dataset(make_recipe(folder))

    reasons = {s["path"]: s["reason"] for s in dataset.skipped}
    assert reasons == {
        str(folder / "1" / "fifo.png"): "a named pipe (FIFO), not a regular file: not read",
        str(folder / "7" / "zero.png"): "a character device, not a regular file: not read",
    }
    assert len(dataset.items) == 12
    digit = next((folder / "1").glob("0*.png"))
    assert read_item_file(digit) == digit.read_bytes()
    with pytest.raises(InputError, match=r"^\d+ bytes, over the limit of 100 bytes of one item"):
        read_item_file(digit, max_bytes=100)


def test_a_root_that_mixes_split_folders_with_class_folders_is_one_error_line(
    make_digit_folder: Callable[..., Path], tmp_path: Path
) -> None:
    """`train/` and `test/` holding class folders beside a class folder would make `train` and
    `test` labels: refused, naming both kinds and the two layouts that work."""
    root = tmp_path / "sp"
    make_digit_folder({"1": 3, "2": 3}, root=root / "train")
    make_digit_folder({"1": 1, "2": 1}, root=root / "test", start=3)
    shutil.copytree(make_digit_folder({"3": 3}, name="more") / "3", root / "dots.in.name")

    result = data_command(root, tmp_path)

    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "mixes split folders (test, train)" in lines[0]
    assert "class folders (dots.in.name)" in lines[0]
    assert f"{root}/test/<class>/..." in lines[0] and f"{root}/<class>/" in lines[0]


def test_a_class_named_like_a_split_that_holds_its_files_is_a_class(
    make_digit_folder: Callable[..., Path],
) -> None:
    folder = make_digit_folder({"1": 3, "2": 3})
    shutil.copytree(make_digit_folder({"3": 2}, name="more") / "3", folder / "test")

    found = scan_class_folder(folder, IMAGE)

    assert sorted(i.label for i in found.items) == ["1"] * 3 + ["2"] * 3 + ["test"] * 2
    assert found.skipped == []


def test_a_class_folder_named_with_spaces_around_is_one_error_line(
    make_digit_folder: Callable[..., Path], tmp_path: Path
) -> None:
    """`a ` beside `a` would be a third class that a table's label (stripped) never names."""
    folder = make_digit_folder({"1": 3, "2": 3})
    shutil.copytree(folder / "2", folder / "2 ")

    result = data_command(folder, tmp_path)

    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert f"class folder '{folder}/2 '" in lines[0] and "('2 ')" in lines[0]
    assert "leading or trailing whitespace" in lines[0]
    assert "rename the folder to '2'" in lines[0]
