"""Folders with one sub-folder per class (the Kaggle image layout), and cheap change detection.

`root/<class>/**/<file>`: every file with one of the modality's suffixes
(`Modality.file_suffixes`) counts for its top-level class folder, however deep it sits. A root
whose sub-folders are all split names (`train/`, `test/`, ...) holding class folders is read as
the union of those splits; the hash split decides anew.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mlfactory.data.raw import RawItem, RawSource, skip
from mlfactory.errors import DataError
from mlfactory.modalities import Modality

SPLIT_DIR_NAMES = frozenset({"train", "training", "val", "valid", "validation", "dev", "test"})
# Junk that archives and desktops add next to the data.
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_visible(name: str) -> bool:
    """False for hidden files and archive/desktop junk."""
    return not name.startswith(".") and name not in IGNORED_NAMES


# Links to folders can loop; a link to a file is followed.
LINKED_FOLDER = "a link to a folder, not followed: copy the folder, or link its files"


def iter_files(root: Path, unreadable: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """All visible files below `root`, in a stable (sorted) order.

    Args:
        root: the folder to walk.
        unreadable: called, in walk order, with each folder (`root` included) that cannot be
            listed and the reason (`cannot read folder: Permission denied`), and with each link
            to a folder (not followed); the walk goes on without their files. None raises the
            `OSError` instead (and links to folders are left out).
    """

    def onerror(exc: OSError) -> None:
        if unreadable is None:
            raise exc
        folder = Path(exc.filename) if exc.filename is not None else root
        unreadable(folder, f"cannot read folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if is_visible(d))
        for name in dirnames:  # os.walk lists links to folders but does not enter them
            if unreadable is not None and os.path.islink(os.path.join(dirpath, name)):
                unreadable(Path(dirpath) / name, LINKED_FOLDER)
        for name in sorted(filenames):
            if is_visible(name):
                yield Path(dirpath) / name


def skipper(skipped: list[dict[str, str]]) -> Callable[[Path, str], None]:
    """An `iter_files` callback that adds each unreadable folder to `skipped`."""
    return lambda folder, reason: skipped.append(skip(folder, reason))


def class_dirs(root: Path) -> list[tuple[str, Path]]:
    """(label, folder) pairs of a class-folder tree, split folders merged.

    Raises:
        DataError: `root` holds no sub-folders.
    """
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and is_visible(p.name))
    if not subdirs:
        raise DataError(
            f"data source '{root}' has no class folders: put each class's files in its own "
            f"sub-folder ({root}/<class>/...)"
        )
    if all(d.name.lower() in SPLIT_DIR_NAMES for d in subdirs):
        return [
            (class_dir.name, class_dir)
            for split_dir in subdirs
            for class_dir in sorted(split_dir.iterdir())
            if class_dir.is_dir() and is_visible(class_dir.name)
        ]
    return [(d.name, d) for d in subdirs]


def scan_class_folder(root: Path, modality: Modality) -> RawSource:
    """Candidates of a class-folder tree: each file with one of the modality's suffixes.

    A folder that cannot be listed (a whole class folder too) is a skipped entry, as an
    unreadable file is: the other classes are still read.

    Args:
        root: the folder holding one sub-folder per class.
        modality: decides which suffixes count; other files are ignored.
    """
    suffixes = modality.file_suffixes
    result = RawSource()
    for label, folder in class_dirs(root):
        others: set[str] = set()
        found = len(result.items)
        for path in iter_files(folder, skipper(result.skipped)):
            if path.suffix.lower() in suffixes:
                result.items.append(RawItem(label=label, origin=str(path), path=path))
            else:
                others.add(path.suffix.lower() or "no suffix")
        if len(result.items) == found and others:  # a class that would vanish without a word
            kinds = ", ".join(sorted(others))
            reason = f"class '{label}' has no {modality.name} file, only other kinds ({kinds})"
            result.skipped.append(skip(folder, reason))
    return result


def unwrap(root: Path) -> Path:
    """Descend through folders whose only sub-folder is one folder (archive wrappers).

    Loose files beside the single folder (a README, a licence) do not stop the descent.
    """
    while True:
        subdirs = [p for p in root.iterdir() if p.is_dir() and is_visible(p.name)]
        if len(subdirs) != 1:
            return root
        root = subdirs[0]


def tree_signature(root: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """A hash of the file list, sizes and modification times below `root` (no content read).

    Args:
        root: a folder or a single file.
        suffixes: count only files with these (lower-case) suffixes; None counts all.
    """
    digest = hashlib.sha256()

    def unreadable(folder: Path, reason: str) -> None:  # the scan reports it; it counts here
        digest.update(f"{folder.relative_to(root).as_posix()}/\t{reason}\n".encode())

    files = [root] if root.is_file() else iter_files(root, unreadable)
    for path in files:
        if suffixes is not None and path.suffix.lower() not in suffixes:
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        rel = path.name if path == root else path.relative_to(root).as_posix()
        digest.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
