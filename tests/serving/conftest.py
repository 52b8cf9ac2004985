"""Fixtures for the serving tests: real MNIST digits and a real (untrained) exported bundle.

`image_bundle` is the one fixture the tests use for a bundle; to serve a shared trained bundle
instead, override it (e.g. `return trained_bundle_path`) and nothing else changes.

Every app writes a prediction log; its default, `sqlite:///predictions.db`, is relative to the
working directory, which `serving_workdir` moves to a temporary folder for these tests.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, make_url, text

from mlfactory.data.packaged import mnist_csv
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.postgres import postgres_url  # noqa: F401  (the fixture)

DIGITS_PER_CLASS = 4
LABELS = [str(digit) for digit in range(10)]


@pytest.fixture(scope="package", autouse=True)
def serving_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the serving tests in a temporary folder, where default prediction logs land."""
    folder, previous = tmp_path_factory.mktemp("serving-cwd"), Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)


@dataclass(frozen=True)
class DigitImage:
    """A real MNIST digit saved as a PNG file."""

    path: Path
    label: str

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> list[DigitImage]:
    """40 real digits (4 per class) as PNG files, in a fixed order."""
    folder = tmp_path_factory.mktemp("digits")
    per_class: dict[str, int] = {}
    images: list[DigitImage] = []
    with gzip.open(mnist_csv(), "rt") as handle:
        for row in csv.reader(handle):
            label = row[-1]
            if per_class.get(label, 0) >= DIGITS_PER_CLASS:
                continue
            per_class[label] = per_class.get(label, 0) + 1
            pixels = np.asarray(row[:-1], dtype=np.uint8).reshape(28, 28)
            path = folder / f"digit_{label}_{per_class[label]}.png"
            Image.fromarray(pixels, mode="L").save(path)
            images.append(DigitImage(path, label))
            if len(images) == DIGITS_PER_CLASS * len(LABELS):
                break
    assert sorted(per_class) == LABELS
    return images


def build_digits_bundle(out_dir: Path, images: list[DigitImage]) -> Path:
    """Export an untrained digits classifier (recipe `digits`) as a real bundle in `out_dir`."""
    from mlfactory.config.loader import load_recipe
    from mlfactory.data.dataset import Item, content_key
    from tests.training_path import untrained_bundle

    recipe = load_recipe("digits", ["model.pretrained=none"])
    items = [
        Item(key=content_key(i.read_bytes()), label=i.label, split="test", path=str(i.path))
        for i in images
    ]
    metrics = {"accuracy": 0.1}
    return untrained_bundle(recipe, LABELS, items, out_dir, "digits-serving-test", metrics).path


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory: pytest.TempPathFactory, digit_images: list[DigitImage]) -> Path:
    """Path of an image bundle to serve (swap for a trained one by overriding this fixture)."""
    return build_digits_bundle(tmp_path_factory.mktemp("bundle"), digit_images)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def client(image_bundle: Path) -> Iterator[TestClient]:
    """A started app (lifespan run, model loaded) on `image_bundle` with default settings."""
    with TestClient(create_app(image_bundle, ServingSettings())) as started:
        yield started


@pytest.fixture
def logged_client(image_bundle: Path, log_url: str) -> Iterator[TestClient]:
    """The digits app logging to the test's own prediction log (`log_url`)."""
    with TestClient(create_app(image_bundle, ServingSettings(log_url=log_url))) as started:
        yield started


def upload(name: str, data: bytes, content_type: str = "image/png") -> tuple[str, Any]:
    """One `files` part for httpx's `files=[...]`."""
    return ("files", (name, data, content_type))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh prediction log: a SQLite file, or a new database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'predictions.db'}"
    server: str = request.getfixturevalue("postgres_url")
    name = f"log_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)
