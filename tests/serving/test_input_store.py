"""MLFACTORY_INPUT_STORE: every predicted input kept as it arrived, named by its SHA-256 in the
log, before the answer; pruned with the log's retention; real digits."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mlfactory.cli import app as cli
from mlfactory.errors import ConfigError
from mlfactory.serving.app import create_app
from mlfactory.serving.input_store import DamagedInput, InputStore
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.settings import ServingSettings
from tests.test_cli import assert_one_line_error

from .conftest import DigitImage, upload

DAY_S = 86_400.0


def logged_rows(log_url: str) -> list:  # type: ignore[type-arg]
    log = PredictionLog(log_url)
    try:
        return log.read()
    finally:
        log.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_predicted_input_is_kept_and_named_in_its_log_row(
    image_bundle: Path, digit_images: list[DigitImage], log_url: str, tmp_path: Path
) -> None:
    store = InputStore(tmp_path / "inputs")
    settings = ServingSettings(log_url=log_url, input_store=str(store.folder))
    first, second = (digit.read_bytes() for digit in digit_images[:2])
    with TestClient(create_app(image_bundle, settings)) as client:
        files = [upload("a.png", first), upload("b.png", second)]
        assert client.post("/v1/predict", files=files).status_code == 200
        os.utime(store.path(sha256(first)), (0, time.time() - DAY_S))  # sent a day ago
        assert client.post("/v1/predict", files=[upload("c.png", first)]).status_code == 200
    rows = logged_rows(log_url)
    assert [row.input_sha256 for row in rows] == [sha256(first), sha256(second), sha256(first)]
    for data in (first, second):
        assert store.path(sha256(data)).read_bytes() == data  # the bytes as they arrived
    kept = sorted(p for p in store.folder.rglob("*") if p.is_file())
    assert kept == sorted(store.path(sha256(data)) for data in (first, second))  # one file each
    # Sent again: its file's time is the latest sending's (what retention counts from).
    assert store.path(sha256(first)).stat().st_mtime > time.time() - 60


def test_texts_are_kept_as_utf8(tmp_path: Path, log_url: str) -> None:
    from .tiny_bundles import tiny_bundle

    store = InputStore(tmp_path / "inputs")
    settings = ServingSettings(log_url=log_url, input_store=str(store.folder))
    text = "Rotterdam: the tanker docked, crude oil prices fell — 3 %"
    with TestClient(create_app(tiny_bundle(tmp_path / "bundle", "text"), settings)) as client:
        assert client.post("/v1/predict", json={"texts": [text]}).status_code == 200
    digest = sha256(text.encode("utf-8"))
    assert store.path(digest).read_text(encoding="utf-8") == text
    assert [row.input_sha256 for row in logged_rows(log_url)] == [digest]


def test_without_a_store_the_log_still_names_each_input_by_its_hash(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    data = digit_images[3].read_bytes()
    assert logged_client.post("/v1/predict", files=[upload("d.png", data)]).status_code == 200
    assert [row.input_sha256 for row in logged_rows(log_url)] == [sha256(data)]


def test_an_input_that_cannot_be_kept_is_neither_answered_nor_logged(
    image_bundle: Path, digit_images: list[DigitImage], log_url: str, tmp_path: Path
) -> None:
    store = InputStore(tmp_path / "inputs")
    data = digit_images[4].read_bytes()
    settings = ServingSettings(log_url=log_url, input_store=str(store.folder))
    with TestClient(create_app(image_bundle, settings)) as client:
        # The folder its file belongs in cannot be made (a file is in the way), as on a full
        # or failing disk: running as root, permissions would not stop the write.
        store.path(sha256(data)).parent.write_bytes(b"in the way")
        response = client.post("/v1/predict", files=[upload("d.png", data)])
        metrics = client.get("/metrics").text
    assert response.status_code == 503
    assert response.json() == {"detail": "the input could not be kept; retry shortly"}
    assert logged_rows(log_url) == []
    assert "mlfactory_prediction_log_write_errors_total 1.0" in metrics


def test_a_store_folder_that_went_away_is_not_made_again_until_it_is_back(
    image_bundle: Path, digit_images: list[DigitImage], log_url: str, tmp_path: Path
) -> None:
    store = InputStore(tmp_path / "inputs")
    first, second = digit_images[5].read_bytes(), digit_images[6].read_bytes()
    settings = ServingSettings(log_url=log_url, input_store=str(store.folder))
    with TestClient(create_app(image_bundle, settings)) as client:
        shutil.rmtree(store.folder)  # a volume unmounted, a clean-up
        gone = client.post("/v1/predict", files=[upload("a.png", first)])
        assert not store.folder.exists()  # not written to another disk in its place
        store.folder.mkdir()
        back = client.post("/v1/predict", files=[upload("b.png", second)])
    assert gone.status_code == 503
    assert back.status_code == 200
    assert store.read(sha256(second)) == second
    assert [row.input_sha256 for row in logged_rows(log_url)] == [sha256(second)]


def test_a_store_that_cannot_be_written_is_one_error_line_at_start(
    image_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")
    with pytest.raises(ConfigError, match="MLFACTORY_INPUT_STORE: cannot write to"):
        InputStore.open(str(blocked / "inputs"))
    monkeypatch.setenv("MLFACTORY_INPUT_STORE", str(blocked / "inputs"))
    monkeypatch.setenv("MLFACTORY_LOG_URL", f"sqlite:///{tmp_path / 'predictions.db'}")
    result = CliRunner().invoke(cli, ["serve", str(image_bundle), "--port", "0"])
    assert_one_line_error(result, f"MLFACTORY_INPUT_STORE: cannot write to {blocked / 'inputs'}")


def test_retention_deletes_the_inputs_not_sent_within_the_period(
    image_bundle: Path, digit_images: list[DigitImage], log_url: str, tmp_path: Path
) -> None:
    store = InputStore.open(str(tmp_path / "inputs"))
    old, recent = (digit.read_bytes() for digit in digit_images[5:7])
    store.keep([old, recent], [sha256(old), sha256(recent)])
    os.utime(store.path(sha256(old)), (0, time.time() - 8 * DAY_S))
    assert store.prune(timedelta(days=30)) == 0
    settings = ServingSettings(log_url=log_url, input_store=str(store.folder), log_retention="7d")
    with TestClient(create_app(image_bundle, settings)):  # prunes when it starts
        deadline = time.monotonic() + 10
        while store.path(sha256(old)).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not store.path(sha256(old)).exists()
    assert store.path(sha256(recent)).read_bytes() == recent


def test_read_returns_a_kept_input_none_for_one_never_kept_and_refuses_one_cut_short(
    digit_images: list[DigitImage], tmp_path: Path
) -> None:
    store = InputStore.open(str(tmp_path / "inputs"))
    kept, never = (digit.read_bytes() for digit in digit_images[:2])
    store.keep([kept], [sha256(kept)])
    assert store.read(sha256(kept)) == kept
    assert store.read(sha256(never)) is None
    store.path(sha256(kept)).write_bytes(kept[: len(kept) // 2])  # cut short
    with pytest.raises(DamagedInput, match="its bytes do not hash to its name"):
        store.read(sha256(kept))
    # Sent again, a file cut short is written again.
    store.keep([kept], [sha256(kept)])
    assert store.read(sha256(kept)) == kept
    assert not [path for path in store.folder.rglob(".*") if path.is_file()]  # no partial left
