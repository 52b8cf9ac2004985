"""build_once: a cache folder appears whole or not at all, and is built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfactory.data.staging import build_once, remove_stale


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
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_keeps_the_current_build(tmp_path: Path) -> None:
    for name in ("set-old", "set-new", "other"):
        (tmp_path / name).mkdir()
    remove_stale(tmp_path / "set-new", "set-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "set-new"]
