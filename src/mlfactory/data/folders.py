"""Folders with one sub-folder per class (the Kaggle image layout), and cheap change detection.

`root/<class>/**/<file>`: every file with one of the modality's suffixes
(`Modality.file_suffixes`) counts for its top-level class folder, however deep it sits. A root
whose sub-folders are all split names (`train/`, `test/`, ...) holding class folders is read as
the union of those splits; the hash split decides anew. A root that mixes split folders holding
folders with class folders is an error. A file of the modality beside the class folders, and a
class folder that yields nothing, are skipped entries; a class folder whose name is not UTF-8,
or has leading or trailing whitespace (a table's label, stripped, could never name it), is an
error (it cannot be a label), a file whose name is not UTF-8 is read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from mlfactory.data.raw import RawItem, RawSource, skip
from mlfactory.errors import DataError, InputError
from mlfactory.modalities import Modality

SPLIT_DIR_NAMES = frozenset({"train", "training", "val", "valid", "validation", "dev", "test"})
# Junk that archives and desktops add next to the data.
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_visible(name: str) -> bool:
    """False for hidden files and archive/desktop junk."""
    return not name.startswith(".") and name not in IGNORED_NAMES


def shown(path: str | Path) -> str:
    """A path as a report shows it: bytes of a name that is not UTF-8 escaped (`caf\\xe9`)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# The largest file read as one item, in bytes: generous for an image, a clip or a text, and a
# bound on what a stray huge file (or a link to /dev/zero) can take from memory.
MAX_ITEM_BYTES = 256 * 1024 * 1024
SPECIAL_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def special_kind(path: Path) -> str | None:
    """What `path` is, links followed, when it exists and is not a regular file ("a named pipe
    (FIFO)", "a character device", ...); None for a regular file, or one that cannot be
    looked at (reading it says why)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return SPECIAL_KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_item_file(path: Path, max_bytes: int = MAX_ITEM_BYTES, what: str = "one item") -> bytes:
    """The bytes of one item's file, read only when it is a regular file of `max_bytes` or less
    (`what` names what the limit is of in the reason: `one input (--max-input-bytes sets it)`).

    Raises:
        InputError: it is no regular file (a named pipe would block, a link to /dev/zero never
            end) or it is larger; the message is the reason to report it skipped.
        OSError: it cannot be read.
    """
    if kind := special_kind(path):
        raise InputError(f"{kind}, not a regular file: not read")
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            size = max(os.fstat(handle.fileno()).st_size, len(data))
            raise InputError(
                f"{size:,} bytes, over the limit of {max_bytes:,} bytes of {what}: not read"
            )
    return data


# Links to folders can loop; a link to a file is followed.
LINKED_FOLDER = "a link to a folder, not followed: copy the folder, or link its files"


def iter_files(
    root: Path,
    unreadable: Callable[[Path, str], None] | None = None,
    walked: list[Path] | None = None,
) -> Iterator[Path]:
    """All visible files below `root`, in a stable (sorted) order.

    Args:
        root: the folder to walk.
        unreadable: called, in walk order, with each folder (`root` included) that cannot be
            listed and the reason (`cannot read folder: Permission denied`), and with each link
            to a folder (not followed); the walk goes on without their files. None raises the
            `OSError` instead (and links to folders are left out).
        walked: if given, each visible folder listed (`root` included) is added to it, in walk
            order.
    """

    def onerror(exc: OSError) -> None:
        if unreadable is None:
            raise exc
        folder = Path(exc.filename) if exc.filename is not None else root
        unreadable(folder, f"cannot read folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if is_visible(d))
        if walked is not None:
            walked.append(Path(dirpath))
        for name in dirnames:  # os.walk lists links to folders but does not enter them
            if unreadable is not None and os.path.islink(os.path.join(dirpath, name)):
                unreadable(Path(dirpath) / name, LINKED_FOLDER)
        for name in sorted(filenames):
            if is_visible(name):
                yield Path(dirpath) / name


def skipper(skipped: list[dict[str, str]]) -> Callable[[Path, str], None]:
    """An `iter_files` callback that adds each unreadable folder to `skipped`."""
    return lambda folder, reason: skipped.append(skip(shown(folder), reason))


def label_of(folder: Path) -> str:
    """The class a folder names.

    Raises:
        DataError: the folder's name is not valid UTF-8, or has leading or trailing whitespace
            (a table's label, stripped, could never name it), so it cannot be a label.
    """
    try:
        folder.name.encode()
    except UnicodeEncodeError:
        raise DataError(
            f"class folder '{shown(folder)}' has a name that is not valid UTF-8, which a label "
            "cannot be (labels go into the dataset, the bundle and the API): rename the folder"
        ) from None
    name = folder.name
    if name != name.strip():
        to = f" to {name.strip()!r}" if name.strip() else ""
        raise DataError(
            f"class folder {str(folder)!r} has a name with leading or trailing whitespace "
            f"({name!r}), which a table's label could never name (labels are stripped): "
            f"rename the folder{to}"
        )
    return name


def visible_children(folder: Path) -> tuple[list[Path], list[Path]]:
    """The visible sub-folders and files of `folder`, each sorted."""
    children = sorted(p for p in folder.iterdir() if is_visible(p.name))
    return [p for p in children if p.is_dir()], [p for p in children if not p.is_dir()]


def holds_folders(folder: Path) -> bool:
    """True when `folder` holds a visible sub-folder (False when it cannot be listed)."""
    try:
        return bool(visible_children(folder)[0])
    except OSError:
        return False


def mixed_layout(root: Path, splits: list[Path], classes: list[Path]) -> str:
    """The error for a root holding split folders (`train/<class>/...`) beside class folders."""
    names = ", ".join(d.name for d in splits)
    others = ", ".join(shown(d.name) for d in classes[:3]) + (", ..." if len(classes) > 3 else "")
    return (
        f"data source '{shown(root)}' mixes split folders ({names}) holding folders with class "
        f"folders ({others}): either every class folder goes inside the split folders "
        f"({shown(root)}/{splits[0].name}/<class>/...), or the classes go directly in "
        f"{shown(root)}/<class>/ and a class named like a split holds its files, not folders"
    )


def class_dirs(root: Path, loose: list[Path] | None = None) -> list[tuple[str, Path]]:
    """(label, folder) pairs of a class-folder tree, split folders merged.

    Args:
        root: the folder holding one sub-folder per class, or one per split.
        loose: if given, the files beside the class folders (in `root`, or in a split folder)
            are added to it.

    Raises:
        DataError: `root` holds no sub-folders, it mixes split folders holding folders with
            class folders, or a class folder's name is not UTF-8 or has leading or trailing
            whitespace.
    """
    subdirs, files = visible_children(root)
    if not subdirs:
        raise DataError(
            f"data source '{shown(root)}' has no class folders: put each class's files in its "
            f"own sub-folder ({shown(root)}/<class>/...)"
        )
    splits = [d for d in subdirs if d.name.lower() in SPLIT_DIR_NAMES]
    if splits and len(splits) < len(subdirs) and any(map(holds_folders, splits)):
        raise DataError(mixed_layout(root, splits, [d for d in subdirs if d not in splits]))
    if len(splits) == len(subdirs):
        classes = []
        for split_dir in subdirs:
            split_classes, split_files = visible_children(split_dir)
            classes += split_classes
            files += split_files
        subdirs = classes
    if loose is not None:
        loose.extend(files)
    return [(label_of(d), d) for d in subdirs]


# Why a file beside the class folders is not an item.
NOT_IN_CLASS = "not in a class folder: put it in the folder of its label"


def scan_class_folder(root: Path, modality: Modality) -> RawSource:
    """Candidates of a class-folder tree: each file with one of the modality's suffixes.

    A folder that cannot be listed (a whole class folder too) is a skipped entry, as an
    unreadable file is: the other classes are still read. So is a file of the modality beside
    the class folders, and a class folder that yields no item (empty, or other kinds only).

    Args:
        root: the folder holding one sub-folder per class.
        modality: decides which suffixes count; other files are ignored.
    """
    suffixes = modality.file_suffixes
    result = RawSource()
    loose: list[Path] = []
    for label, folder in class_dirs(root, loose):
        others: set[str] = set()
        found, reported = len(result.items), len(result.skipped)
        for path in iter_files(folder, skipper(result.skipped)):
            if path.suffix.lower() in suffixes:
                result.items.append(RawItem(label=label, origin=shown(path), path=path))
            else:
                others.add(path.suffix.lower() or "no suffix")
        if len(result.items) > found:
            continue
        if others:  # a class that would vanish without a word
            kinds = ", ".join(sorted(others))
            reason = f"class '{label}' has no {modality.name} file, only other kinds ({kinds})"
        elif len(result.skipped) == reported:  # not an unreadable folder, which is reported
            reason = f"class '{label}' is an empty folder: put its {modality.name} files in it"
        else:
            continue
        result.skipped.append(skip(shown(folder), reason))
    result.skipped += [skip(shown(p), NOT_IN_CLASS) for p in loose if p.suffix.lower() in suffixes]
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
    """`tree_state`'s hash alone."""
    return tree_state(root, suffixes)[0]


def tree_state(root: Path, suffixes: tuple[str, ...] | None = None) -> tuple[str, int]:
    """A hash of the file list below `root` and of each file's size, modification time, inode
    and status-change time (no content read), and of the folders without a counted file (an
    empty class folder is reported when the source is read, so adding or filling one changes
    the signature).

    Size and modification time alone miss a file replaced by another of the same size whose
    modification time was kept (`cp -p`, `rsync -t`, a tool that restores mtimes): the inode
    changes when another file takes its place (`mv`), and the status-change time (ctime)
    whenever its content or its times are written, which no program can set back (Git's index
    keeps both too). The same one `stat` a file gives all four. A `chmod` or a new hard link
    moves the ctime too: the source is then read again, which costs time, never a stale dataset.

    Args:
        root: a folder or a single file.
        suffixes: count only files with these (lower-case) suffixes; None counts all.

    Returns:
        The hash (16 hex digits), and the newest status-change time of a counted file (ns; 0
        with none): `sources.source_signature` tells from it whether a file may still change
        within the same timestamp.
    """
    digest = hashlib.sha256()
    newest = 0

    def unreadable(folder: Path, reason: str) -> None:  # the scan reports it; it counts here
        line = f"{folder.relative_to(root).as_posix()}/\t{reason}\n"
        digest.update(line.encode(errors="surrogateescape"))

    walked: list[Path] = []
    files = [root] if root.is_file() else iter_files(root, unreadable, walked)
    holding: set[Path] = set()
    for path in files:
        if suffixes is not None and path.suffix.lower() not in suffixes:
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        holding.add(path.parent)
        newest = max(newest, stat.st_ctime_ns)
        rel = path.name if path == root else path.relative_to(root).as_posix()
        # A name that is not UTF-8 hashes as its bytes; a UTF-8 one as before.
        line = f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\t{stat.st_ino}\t{stat.st_ctime_ns}\n"
        digest.update(line.encode(errors="surrogateescape"))
    holding.update(above for folder in list(holding) for above in folder.parents)
    for folder in walked[1:]:  # a tree without such folders keeps the signature it had
        if folder not in holding:
            unreadable(folder, "no file counted")
    return digest.hexdigest()[:16], newest
