"""Source dispatch and the cheap source signature."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfactory.config.schema import DataConfig
from mlfactory.data.raw import SourceContext
from mlfactory.data.sources import resolve_source, source_signature, split_scheme
from mlfactory.errors import DataError
from mlfactory.modalities import get_modality

from .conftest import settle


def _ctx(source: str | Path, modality: str = "image") -> SourceContext:
    return SourceContext(DataConfig(source=str(source), cache_dir="unused"), get_modality(modality))


def test_split_scheme() -> None:
    assert split_scheme("https://example.org/a.zip") == ("url", "https://example.org/a.zip")
    assert split_scheme("kaggle:owner/set") == ("kaggle", "owner/set")
    assert split_scheme("hf:imdb:train") == ("hf", "imdb:train")
    assert split_scheme("sonic-pi:samples") == ("sonic-pi", "samples")
    assert split_scheme("data/mushrooms") is None
    assert split_scheme("C:/data/mushrooms") is None


def test_a_file_that_is_not_a_table(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"is a file but not a table"):
        resolve_source(_ctx(tmp_path / "x.png"))


def test_text_folders_may_hold_tables(reuters_sample: Path, tmp_path: Path) -> None:
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "all.jsonl").write_bytes(reuters_sample.read_bytes())
    assert len(resolve_source(_ctx(tmp_path / "news", "text")).items) == 36


def test_signature_changes_with_the_folder_not_with_time(
    sonic_pi_fixture: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "clips" / "bd"
    folder.mkdir(parents=True)
    (folder / "bd_fat.flac").write_bytes((sonic_pi_fixture / "bd_fat.flac").read_bytes())
    settle()  # signed within a tick of a change, a signature holds its time (racily clean)
    ctx = _ctx(tmp_path / "clips", "audio")
    first = source_signature(ctx)
    assert source_signature(ctx) == first
    (folder / "notes.md").write_text("not audio")
    assert source_signature(ctx) == first
    (folder / "copy.flac").write_bytes(b"")
    assert source_signature(ctx) != first


def test_packaged_signatures_do_not_read_content(
    sonic_pi_fixture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Path, "read_bytes", None)  # any content read would fail
    assert source_signature(_ctx("sonic-pi:samples", "audio")).startswith("sonic-pi:")
    assert source_signature(_ctx("kaggle:a/b")) == "kaggle:a/b"
