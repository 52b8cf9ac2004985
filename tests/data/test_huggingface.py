"""hf:<dataset>[:<split>] with a stand-in `datasets` module (the hub is not reachable here)."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlfactory.config.schema import DataConfig
from mlfactory.data.huggingface import resolve_hf
from mlfactory.data.raw import SourceContext
from mlfactory.errors import DataError
from mlfactory.modalities import get_modality


class ClassLabel:
    def __init__(self, names: list[str]) -> None:
        self.names = names


class Image:
    def __init__(self, decode: bool = True) -> None:
        self.decode = decode


class FakeDataset:
    """The slice of `datasets.Dataset` the loader uses: rows, column names, features, casting."""

    def __init__(self, rows: list[dict[str, Any]], features: dict[str, Any]) -> None:
        self.rows, self.features = rows, features
        self.column_names = list(rows[0]) if rows else list(features)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def cast_column(self, column: str, feature: Any) -> FakeDataset:
        assert column == "image" and feature.decode is False
        undecoded = [{**row, column: {"bytes": row[column], "path": "x.png"}} for row in self.rows]
        return FakeDataset(undecoded, {**self.features, column: feature})


@pytest.fixture
def fake_datasets(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Install a `datasets` module whose load_dataset serves the returned registry."""
    registry: dict[str, Any] = {}
    calls: list[tuple[str, str | None]] = []

    def load_dataset(name: str, split: str | None = None) -> Any:
        calls.append((name, split))
        if name not in registry:
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub\nmore detail")
        return registry[name] if split is None else registry[name][split]

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    registry["_calls"] = calls
    return registry


def _ctx(source: str, cache: Path, modality: str = "text") -> SourceContext:
    return SourceContext(DataConfig(source=source, cache_dir=str(cache)), get_modality(modality))


@pytest.fixture
def news(reuters_sample: Path) -> dict[str, FakeDataset]:
    """The real Reuters sample as a two-split data set with integer class labels."""
    names = ["crude", "grain", "ship"]
    rows = [json.loads(line) for line in reuters_sample.read_text().splitlines()]
    as_ids = [{"text": r["text"], "label": names.index(r["label"])} for r in rows]
    unlabelled = [{"text": r["text"], "label": -1} for r in rows[:3]]
    features = {"text": object(), "label": ClassLabel(names)}
    return {
        "train": FakeDataset(as_ids[:30], features),
        "test": FakeDataset(as_ids[30:] + unlabelled, features),
    }


def test_missing_datasets_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"needs the datasets package: pip install datasets"):
        resolve_hf("ag_news", _ctx("hf:ag_news", tmp_path))


def test_all_splits_are_merged_and_class_ids_become_names(
    fake_datasets: dict[str, Any], news: dict[str, FakeDataset], tmp_path: Path
) -> None:
    fake_datasets["reuters"] = news
    found = resolve_hf("reuters", _ctx("hf:reuters", tmp_path))

    assert Counter(item.label for item in found.items) == {"crude": 12, "grain": 12, "ship": 12}
    assert found.items[0].origin == "hf:reuters:train:0"
    assert [s["path"] for s in found.skipped] == [f"hf:reuters:test:{i}" for i in (6, 7, 8)]
    assert fake_datasets["_calls"] == [("reuters", None)]


def test_one_split_can_be_named(
    fake_datasets: dict[str, Any], news: dict[str, FakeDataset], tmp_path: Path
) -> None:
    fake_datasets["reuters"] = news
    found = resolve_hf("reuters:train", _ctx("hf:reuters:train", tmp_path))
    assert len(found.items) == 30
    assert fake_datasets["_calls"] == [("reuters", "train")]


def test_missing_text_column_lists_the_columns(
    fake_datasets: dict[str, Any], news: dict[str, FakeDataset], tmp_path: Path
) -> None:
    fake_datasets["reuters"] = news
    ctx = SourceContext(
        DataConfig(source="hf:reuters", cache_dir=str(tmp_path), text_column="sentence"),
        get_modality("text"),
    )
    with pytest.raises(DataError, match=r"column 'sentence' .*columns present: 'text', 'label'"):
        resolve_hf("reuters", ctx)


def test_load_failures_are_one_line_data_errors(
    fake_datasets: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(
        DataError,
        match=r"could not load Hugging Face data set 'nope' \(Dataset 'nope' doesn't exist",
    ) as caught:
        resolve_hf("nope", _ctx("hf:nope", tmp_path))
    assert "\n" not in str(caught.value)


def test_images_are_written_once_as_files(
    fake_datasets: dict[str, Any], mnist_pngs: dict[str, list[Path]], tmp_path: Path
) -> None:
    rows = [
        {"image": p.read_bytes(), "label": int(label)}
        for label in "27"
        for p in mnist_pngs[label][:4]
    ]
    names = [str(d) for d in range(10)]
    fake_datasets["mnist"] = {
        "train": FakeDataset(rows, {"image": Image(), "label": ClassLabel(names)})
    }
    ctx = _ctx("hf:mnist", tmp_path, modality="image")

    found = resolve_hf("mnist", ctx)

    assert Counter(item.label for item in found.items) == {"2": 4, "7": 4}
    first = next(item for item in found.items if item.path and item.path.name == "train-000000.png")
    assert first.path is not None and first.path.read_bytes() == mnist_pngs["2"][0].read_bytes()
    resolve_hf("mnist", ctx)
    assert len(fake_datasets["_calls"]) == 1  # the files are reused


def test_a_row_naming_a_file_outside_the_caches_is_skipped_not_copied(
    fake_datasets: dict[str, Any],
    mnist_pngs: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A data set is not ours: a row's `path` is read only inside the caches of `datasets`
    (where it downloads and extracts files), never elsewhere (`~/.aws/credentials`)."""
    hf_cache = tmp_path / "hf-cache"
    cached = hf_cache / "downloads" / "extracted" / "a.png"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(mnist_pngs["2"][0].read_bytes())
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(mnist_pngs["7"][0].read_bytes())  # a valid image: only its place is wrong
    escape = hf_cache / "link-out.png"
    escape.symlink_to(secret)  # inside the cache by name, outside once resolved
    undecoded = [
        {"image": {"bytes": None, "path": str(cached)}, "label": 2},
        {"image": {"bytes": None, "path": str(secret)}, "label": 7},
        {"image": {"bytes": None, "path": str(escape)}, "label": 7},
        {"image": {"bytes": mnist_pngs["7"][1].read_bytes(), "path": str(secret)}, "label": 7},
    ]
    monkeypatch.setattr(
        sys.modules["datasets"],
        "config",
        types.SimpleNamespace(HF_DATASETS_CACHE=str(hf_cache)),
        raising=False,
    )
    names = [str(d) for d in range(10)]
    fake_datasets["hostile"] = {
        "train": FakeDataset(undecoded, {"image": object(), "label": ClassLabel(names)})
    }

    found = resolve_hf("hostile", _ctx("hf:hostile", tmp_path / "cache", modality="image"))

    assert Counter(item.label for item in found.items) == {"2": 1, "7": 1}
    written = {item.path.read_bytes() for item in found.items if item.path is not None}
    assert written == {cached.read_bytes(), mnist_pngs["7"][1].read_bytes()}
    assert secret.read_bytes() not in written
    reasons = {s["path"]: s["reason"] for s in found.skipped}
    for row in (1, 2):
        assert (
            "outside the Hugging Face caches and the data set's folder: not read"
            in reasons[f"hf:hostile:train:{row}"]
        )
