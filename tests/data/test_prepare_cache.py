"""prepare_dataset's cache: the prepared dataset is reused while its source's signature holds
(names, sizes, mtimes, inodes, ctimes), and prepared again when the source changed, a real
`cp -p` or `mv` of a same-size file with its mtime kept too, or while it was read."""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from mlfactory.data import prepare as prepare_module
from mlfactory.data import sources
from mlfactory.data.prepare import cache_path, prepare_dataset

from .conftest import MakeRecipe, settle
from .replacing import replace_keeping_size_and_mtime

DigitFolder = Callable[..., Path]


@pytest.fixture
def count_resolves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each time prepare_dataset resolves its source (i.e. does not use the cache)."""
    calls: list[str] = []
    real = prepare_module.resolve_source

    def spy(ctx: object) -> object:
        calls.append(ctx.source)  # type: ignore[attr-defined]
        return real(ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(prepare_module, "resolve_source", spy)
    return calls


def test_cached_result_is_returned_until_the_folder_changes(
    make_recipe: MakeRecipe,
    make_digit_folder: DigitFolder,
    cache_dir: Path,
    count_resolves: list[str],
) -> None:
    folder = make_digit_folder({"0": 10, "8": 10})
    settle()
    config = make_recipe(folder, name="cached")
    first = prepare_dataset(config)
    path = cache_path(config)
    assert path.is_file()
    assert re.fullmatch(r"[0-9a-f]{12}", path.parent.name)
    assert path.parent.parent == cache_dir / "cached"

    assert prepare_dataset(config) == first
    assert len(count_resolves) == 1

    victim = next((folder / "8").glob("*.png"))
    os.utime(victim, ns=(0, 0))  # same name and size, another mtime
    assert prepare_dataset(config) == first
    assert len(count_resolves) == 2

    prepare_dataset(config, refresh=True)
    assert len(count_resolves) == 3


def _stored_png(image: Image.Image) -> bytes:
    """`image` as a PNG without compression: its size depends on its pixels' count alone."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


@pytest.fixture
def same_size_images(make_digit_folder: DigitFolder) -> tuple[Path, Path, bytes]:
    """A digits folder, one of its real images (written uncompressed), and another real image
    of the same size: that one inverted."""
    folder = make_digit_folder({"0": 10, "8": 10})
    victim = sorted((folder / "8").glob("*.png"))[0]
    with Image.open(victim) as image:
        digit = image.convert("L")
    victim.write_bytes(_stored_png(digit))
    settle()
    return folder, victim, _stored_png(ImageOps.invert(digit))


@pytest.mark.parametrize("how", ["cp -p", "mv"])
def test_an_image_replaced_with_its_size_and_mtime_kept_is_read_again(
    how: str,
    make_recipe: MakeRecipe,
    same_size_images: tuple[Path, Path, bytes],
    count_resolves: list[str],
    tmp_path: Path,
) -> None:
    """Another image of the same size put in one's place by the real `cp -p` or `mv`, its
    mtime kept: the cached dataset is not reused, and the new image is in the new one."""
    folder, victim, replacement = same_size_images
    config = make_recipe(folder, name="replaced")
    first = prepare_dataset(config)
    replace_keeping_size_and_mtime(victim, replacement, how, tmp_path / "scratch")
    settle()
    second = prepare_dataset(config)
    assert len(count_resolves) == 2
    assert second.fingerprint != first.fingerprint
    (item,) = [item for item in second.items if item.path == str(victim.absolute())]
    assert item.key not in {item.key for item in first.items}
    assert prepare_dataset(config) == second  # and it is cached in turn
    assert len(count_resolves) == 2


def test_an_image_changed_while_the_folder_is_read_is_read_again(
    make_recipe: MakeRecipe,
    same_size_images: tuple[Path, Path, bytes],
    count_resolves: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An image rewritten after its content was read, before the dataset is cached (a sync
    still writing the folder): the next call reads the folder again, never pairing the cached
    content with the folder's new state."""
    folder, victim, replacement = same_size_images
    real = prepare_module.build_dataset

    def rewritten_once_read(*args: object) -> object:
        dataset = real(*args)  # type: ignore[arg-type]
        victim.write_bytes(replacement)
        return dataset

    monkeypatch.setattr(prepare_module, "build_dataset", rewritten_once_read)
    config = make_recipe(folder, name="changing")
    first = prepare_dataset(config)
    monkeypatch.setattr(prepare_module, "build_dataset", real)
    second = prepare_dataset(config)
    assert len(count_resolves) == 2
    assert second.fingerprint != first.fingerprint


def test_a_folder_signed_as_it_changes_is_read_again_until_it_settles(
    make_recipe: MakeRecipe,
    make_digit_folder: DigitFolder,
    count_resolves: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file changed within a timestamp tick of the signing could change again with the same
    ctime, size and mtime, unseen: that dataset is never reused, and the folder is read again
    until it is signed settled. (The tick is widened to a minute here, so that the files are
    in it whatever the machine's load.)"""
    folder = make_digit_folder({"0": 10, "8": 10})
    config = make_recipe(folder, name="racy")
    with monkeypatch.context() as patched:
        patched.setattr(sources, "racy_window", lambda ctime_ns: 60_000_000_000)
        first = prepare_dataset(config)
        assert prepare_dataset(config) == first
        assert len(count_resolves) == 2  # signed within the tick: not reused
    settle()
    prepare_dataset(config)
    assert prepare_dataset(config) == first
    assert len(count_resolves) == 3  # signed settled once, then reused


def test_the_racy_window_is_a_tick_or_whole_seconds() -> None:
    assert sources.racy_window(1_700_000_000_123_456_789) == 20_000_000
    assert sources.racy_window(1_700_000_000_000_000_000) == 2_000_000_000  # FAT, ext3, HFS+


def test_other_split_parameters_get_their_own_cache(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder
) -> None:
    folder = make_digit_folder({"0": 5, "8": 5})
    plain, capped = make_recipe(folder), make_recipe(folder, max_per_class=3)
    assert cache_path(plain).parent != cache_path(capped).parent
    assert cache_path(plain) == cache_path(make_recipe(folder))


def test_corrupt_cache_file_is_rebuilt(
    make_recipe: MakeRecipe, make_digit_folder: DigitFolder, count_resolves: list[str]
) -> None:
    config = make_recipe(make_digit_folder({"0": 5, "8": 5}))
    first = prepare_dataset(config)
    cache_path(config).write_text("{not json")
    assert prepare_dataset(config) == first
    assert len(count_resolves) == 2


def test_deleted_materialised_files_are_rebuilt(
    make_recipe: MakeRecipe, tuxpaint_fixture: Path, count_resolves: list[str]
) -> None:
    config = make_recipe("tuxpaint:stamps")
    first = prepare_dataset(config)
    (sources,) = (Path(config.data.cache_dir) / "_sources").glob("tuxpaint-stamps-*")
    shutil.rmtree(sources)
    again = prepare_dataset(config)
    assert again == first and len(count_resolves) == 2
    assert all(Path(item.path).is_file() for item in again.items)  # type: ignore[arg-type]


def test_item_paths_are_absolute_with_a_relative_cache(
    make_recipe: MakeRecipe,
    tuxpaint_fixture: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    dataset = prepare_dataset(make_recipe("tuxpaint:stamps", cache_dir=".mlfactory/data"))
    assert (tmp_path / ".mlfactory" / "data" / "test").is_dir()
    assert all(Path(item.path).is_absolute() for item in dataset.items)  # type: ignore[arg-type]
