"""build_once: a cache folder appears whole or not at all, and is built once."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from mlfactory.data.staging import MARKER, build_once, remove_stale
from mlfactory.errors import DataError


def _copy_digits(digits: list[Path], log: Path, folder: Path) -> list[dict[str, str]]:
    """A slow build of real digits that logs which process ran it."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    for path in digits:
        (folder / path.name).write_bytes(path.read_bytes())
        time.sleep(0.01)
    return [{"path": "x.png", "reason": f"built by {os.getpid()}"}]


def _build_and_read(
    dest: Path, digits: list[Path], log: Path, start: object, results: object
) -> None:
    """Wait for the others, build `dest` once, then read every digit in it twice."""
    start.wait()  # type: ignore[attr-defined]
    skipped = build_once(dest, lambda folder: _copy_digits(digits, log, folder))
    names = sorted(p.name for p in dest.iterdir() if p.name != MARKER)
    time.sleep(0.3)  # a second builder that replaced `dest` now would break this read
    sizes = [len((dest / name).read_bytes()) for name in names]
    results.put((skipped, names, dest.stat().st_ino, len(sizes)))  # type: ignore[attr-defined]


def test_builds_once_and_remembers_what_was_skipped(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> list[dict[str, str]]:
        calls.append(folder)
        (folder / "a.txt").write_text("a")
        return [{"path": "b.png", "reason": "corrupt"}]

    dest = tmp_path / "built"
    assert build_once(dest, build) == [{"path": "b.png", "reason": "corrupt"}]
    assert build_once(dest, build) == [{"path": "b.png", "reason": "corrupt"}]
    assert len(calls) == 1 and calls[0] != dest
    assert (dest / "a.txt").read_text() == "a"
    build_once(dest, build, refresh=True)
    assert len(calls) == 2


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def build(folder: Path) -> list[dict[str, str]]:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_once(tmp_path / "built", build)
    assert [p.name for p in tmp_path.iterdir()] == [".built.lock"]


def test_remove_stale_keeps_the_current_build(tmp_path: Path) -> None:
    for name in ("set-old", "set-new", "other"):
        (tmp_path / name).mkdir()
    remove_stale(tmp_path / "set-new", "set-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "set-new"]


def _read_until_told(dest: Path, digits: list[Path], reading: object, done: object) -> None:
    """Another run: use `dest` (building it if needed) and read it until `done` is set."""
    build_once(dest, lambda folder: _copy_digits(digits, dest.parent / "builds.log", folder))
    reading.set()  # type: ignore[attr-defined]
    done.wait(timeout=60)  # type: ignore[attr-defined]


def _start_reader(dest: Path, digits: list[Path]) -> tuple[object, object]:
    context = multiprocessing.get_context("fork")
    reading, done = context.Event(), context.Event()
    reader = context.Process(target=_read_until_told, args=(dest, digits, reading, done))
    reader.start()
    assert reading.wait(timeout=60)
    return reader, done


def test_a_refresh_never_replaces_a_folder_another_run_reads(
    tmp_path: Path, mnist_pngs: dict[str, list[Path]]
) -> None:
    """A `data --refresh` while a training run reads the cache folder: one error, the folder
    the training reads untouched; once that run has ended, the refresh rebuilds it."""
    digits, dest = mnist_pngs["3"][:5], tmp_path / "cache" / "digits"
    reader, done = _start_reader(dest, digits)
    before = dest.stat().st_ino
    try:
        with pytest.raises(DataError, match=r"^--refresh: another run reads the cache folder "):
            build_once(dest, lambda folder: _copy_digits(digits[:1], tmp_path / "l", folder), True)
        assert dest.stat().st_ino == before and len(list(dest.glob("*.png"))) == 5
    finally:
        done.set()  # type: ignore[attr-defined]
        reader.join(timeout=60)  # type: ignore[attr-defined]
    build_once(dest, lambda folder: _copy_digits(digits[:1], tmp_path / "l", folder), True)
    assert dest.stat().st_ino != before and len(list(dest.glob("*.png"))) == 1


def test_remove_stale_leaves_an_older_build_another_run_reads(
    tmp_path: Path, mnist_pngs: dict[str, list[Path]]
) -> None:
    digits, cache = mnist_pngs["3"][:3], tmp_path / "cache"
    reader, done = _start_reader(cache / "set-v1", digits)
    (cache / "set-v0").mkdir()
    try:
        remove_stale(cache / "set-v2", "set-")
        assert sorted(p.name for p in cache.glob("set-*")) == ["set-v1"]
    finally:
        done.set()  # type: ignore[attr-defined]
        reader.join(timeout=60)  # type: ignore[attr-defined]
    remove_stale(cache / "set-v2", "set-")
    assert list(cache.glob("set-*")) == []


def test_concurrent_runs_build_once_and_keep_the_folder_the_others_read(
    tmp_path: Path, mnist_pngs: dict[str, list[Path]]
) -> None:
    digits = mnist_pngs["3"][:30]
    dest, log = tmp_path / "cache" / "digits", tmp_path / "builds.log"
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(3), context.Queue()
    workers = [
        context.Process(target=_build_and_read, args=(dest, digits, log, start, results))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(log.read_text().split()) == 1
    assert len({repr(outcome) for outcome in outcomes}) == 1
    skipped, names, _inode, read = outcomes[0]
    assert names == sorted(p.name for p in digits) and read == len(digits)
    assert skipped[0]["reason"] == f"built by {log.read_text().split()[0]}"
