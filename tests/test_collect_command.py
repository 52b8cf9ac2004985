"""`mlfactory collect`: the inputs users labelled, from the server's input store, as a dataset
the recipes train on; real digits through a real app, and texts."""

from __future__ import annotations

import csv
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mlfactory.cli import app as cli
from mlfactory.collect_command import collect_labelled
from mlfactory.config.loader import load_recipe
from mlfactory.data.prepare import prepare_dataset
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.serving.conftest import DigitImage, digit_images, image_bundle, upload
from tests.serving.tiny_bundles import tiny_bundle
from tests.test_cli import assert_one_line_error

runner = CliRunner()
__all__ = ["digit_images", "image_bundle"]  # the serving tests' fixtures: real digits, a bundle


def serve_and_label(
    bundle: Path, settings: ServingSettings, posts: list[dict], labels: list[str | None]
) -> None:
    """Send each request, then the true label of its first input (None: no label)."""
    with TestClient(create_app(bundle, settings)) as client:
        for post, label in zip(posts, labels, strict=True):
            answer = client.post("/v1/predict", **post)
            assert answer.status_code == 200, answer.text
            if label is not None:
                sent = {"request_id": answer.json()["request_id"], "label": label}
                assert client.post("/v1/feedback", json=sent).status_code == 200


def test_labelled_digits_become_a_class_folder_dataset_the_recipe_reads(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    store, log = tmp_path / "inputs", f"sqlite:///{tmp_path / 'predictions.db'}"
    settings = ServingSettings(log_url=log, input_store=str(store))
    digits = digit_images[:12]
    posts = [{"files": [upload("d.png", d.read_bytes())]} for d in digits]
    labels: list[str | None] = [d.label for d in digits[:10]] + [None, None]  # 2 unlabelled
    serve_and_label(image_bundle, settings, posts, labels)
    # The first digit again, labelled otherwise later: its latest label wins.
    other = "7" if digits[0].label != "7" else "1"
    serve_and_label(image_bundle, settings, posts[:1], [other])

    out = tmp_path / "dataset"
    result = runner.invoke(
        cli, ["collect", str(image_bundle), "--inputs", str(store), "--log", log, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "10 labelled inputs" in result.output and "1 relabelled" in result.output
    files = sorted(out.rglob("*.png"))
    assert len(files) == 10
    relabelled = hashlib.sha256(digits[0].read_bytes()).hexdigest()
    for digit in digits[1:10]:
        digest = hashlib.sha256(digit.read_bytes()).hexdigest()
        assert (out / digit.label / f"{digest}.png").read_bytes() == digit.read_bytes()
    assert (out / other / f"{relabelled}.png").read_bytes() == digits[0].read_bytes()
    assert not (out / digits[0].label / f"{relabelled}.png").exists()

    # The line to train on them names the model's own recipe, which reads the folder as a
    # dataset of those labels.
    assert f"train on them: mlfactory train {image_bundle} data.source={out}\n" in result.output
    overrides = [f"data.source={out}", f"data.cache_dir={tmp_path / 'c'}"]
    recipe = load_recipe(str(image_bundle), overrides)
    dataset = prepare_dataset(recipe.config)
    assert sum(len(dataset.split(s)) for s in ("train", "val", "test")) == 10


def test_a_malformed_summary_in_the_log_is_one_line_naming_its_row(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    store, path = tmp_path / "inputs", tmp_path / "predictions.db"
    settings = ServingSettings(log_url=f"sqlite:///{path}", input_store=str(store))
    posts = [{"files": [upload("d.png", d.read_bytes())]} for d in digit_images[:3]]
    serve_and_label(image_bundle, settings, posts, [d.label for d in digit_images[:3]])
    with sqlite3.connect(path) as connection:  # an edit cut the second row's summary short
        connection.execute("UPDATE predictions SET input_summary = '{\"width\": 2' WHERE id = 2")
    out = tmp_path / "dataset"
    args = ["--inputs", str(store), "--log", str(path), "--out", str(out)]
    result = runner.invoke(cli, ["collect", str(image_bundle), *args])
    assert_one_line_error(result, "row 2 of the prediction log (digits-serving-test) is malformed")
    assert "its input_summary is not valid JSON" in result.output
    assert not out.exists()


def test_labelled_texts_become_a_csv(tmp_path: Path) -> None:
    store, log = tmp_path / "inputs", f"sqlite:///{tmp_path / 'predictions.db'}"
    bundle = tiny_bundle(tmp_path / "bundle", "text")
    texts = ["crude oil prices rose, said traders", "wheat exports fell in March"]
    posts = [{"json": {"texts": [text]}} for text in texts]
    serve_and_label(
        bundle, ServingSettings(log_url=log, input_store=str(store)), posts, ["crude", "grain"]
    )
    result = collect_labelled(str(bundle), tmp_path / "dataset", str(store), log)
    with (tmp_path / "dataset" / "texts.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"text": texts[0], "label": "crude"}, {"text": texts[1], "label": "grain"}]
    assert result.written == 2 and result.missing == 0
    assert result.source == tmp_path / "dataset" / "texts.csv"  # what data.source names


def test_labelled_inputs_the_store_no_longer_holds_or_holds_damaged_are_counted_and_left_out(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    store, log = tmp_path / "inputs", f"sqlite:///{tmp_path / 'predictions.db'}"
    digits = digit_images[:4]
    posts = [{"files": [upload("d.png", d.read_bytes())]} for d in digits]
    settings = ServingSettings(log_url=log, input_store=str(store))
    serve_and_label(image_bundle, settings, posts, [d.label for d in digits])
    gone, cut = (hashlib.sha256(d.read_bytes()).hexdigest() for d in digits[:2])
    (store / gone[:2] / gone).unlink()  # as retention would
    (store / cut[:2] / cut).write_bytes(b"")  # as a machine crash while it was written may
    out = tmp_path / "dataset"
    result = runner.invoke(
        cli, ["collect", str(image_bundle), "--inputs", str(store), "--log", log, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "2 labelled inputs" in result.output
    assert "1 no longer in the store" in result.output
    assert "1 damaged in the store (their bytes no longer hash to their name): left out" in (
        result.output
    )
    kept = sorted(path.read_bytes() for path in out.rglob("*.png"))
    assert kept == sorted(d.read_bytes() for d in digits[2:])
    counted = collect_labelled(str(image_bundle), tmp_path / "again", str(store), log)
    assert (counted.written, counted.missing, counted.damaged) == (2, 1, 1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--out", "{tmp}/d"], "--inputs: name the server's input store"),
        (["--inputs", "{tmp}/none", "--out", "{tmp}/d"], "--inputs {tmp}/none: no such folder"),
        (["--inputs", "{tmp}", "--out", "{tmp}"], "--out {tmp}: it exists and is not an empty"),
        (
            ["--inputs", "{tmp}/store", "--out", "{tmp}/d", "--log", "sqlite:///{tmp}/no.db"],
            "no prediction log at",
        ),
        (["--inputs", "{tmp}/store", "--out", "{tmp}/d", "--since", "soon"], "--since 'soon'"),
        (
            ["--inputs", "{tmp}/store", "--out", "{tmp}/store/new"],
            "--out {tmp}/store/new is inside the input store {tmp}/store: write it elsewhere",
        ),
        (
            ["--inputs", "{tmp}/store", "--out", "{bundle}/new"],
            "--out {bundle}/new is inside the bundle {bundle}: write it elsewhere",
        ),
    ],
)
def test_what_collect_cannot_do_is_one_error_line(
    image_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("MLFACTORY_INPUT_STORE", raising=False)
    (tmp_path / "store").mkdir()
    (tmp_path / "predictions.db").touch()
    monkeypatch.chdir(tmp_path)
    places = {"{tmp}": str(tmp_path), "{bundle}": str(image_bundle)}

    def filled(text: str) -> str:
        for place, path in places.items():
            text = text.replace(place, path)
        return text

    result = runner.invoke(cli, ["collect", str(image_bundle), *map(filled, arguments)])
    assert_one_line_error(result, filled(message))
    assert not (tmp_path / "store" / "new").exists() and not (image_bundle / "new").exists()


def test_a_database_that_is_not_a_prediction_log_is_refused(
    image_bundle: Path, tmp_path: Path
) -> None:
    """An SQLite file of something else: not read as a log without labels, no folder made."""
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    (tmp_path / "store").mkdir()
    out = tmp_path / "dataset"
    args = ["--inputs", str(tmp_path / "store"), "--log", str(other), "--out", str(out)]
    result = runner.invoke(cli, ["collect", str(image_bundle), *args])
    assert_one_line_error(result, "holds no prediction log")
    assert "lacks the log's tables predictions and feedback (its tables: notes)" in result.output
    assert not out.exists()


def test_a_store_named_by_the_environment_is_blamed_on_it(
    image_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFACTORY_INPUT_STORE", str(tmp_path / "t.sh"))
    result = runner.invoke(cli, ["collect", str(image_bundle), "--out", str(tmp_path / "d")])
    assert_one_line_error(result, f"MLFACTORY_INPUT_STORE={tmp_path / 't.sh'} (no --inputs given)")
    assert "--inputs" not in result.output.split("(")[0]


def test_the_train_line_names_a_bundle_folder_named_like_a_recipe_as_a_path(
    image_bundle: Path,
    digit_images: list[DigitImage],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mlfactory train image` trains the packaged `image` recipe: a bundle folder named
    `image` is printed as `./image`, and one named `model.yaml` by its bundle.json."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(image_bundle, "image")
    shutil.copytree(image_bundle, "model.yaml")
    store, log = tmp_path / "inputs", f"sqlite:///{tmp_path / 'predictions.db'}"
    digits = digit_images[:2]
    posts = [{"files": [upload("d.png", d.read_bytes())]} for d in digits]
    settings = ServingSettings(log_url=log, input_store=str(store))
    serve_and_label(Path("image"), settings, posts, [d.label for d in digits])
    own = load_recipe(str(image_bundle), ["data.source=labelled-image"])

    for folder, printed in (("image", "./image"), ("model.yaml", "model.yaml/bundle.json")):
        args = ["--inputs", str(store), "--log", log, "--out", f"labelled-{folder}"]
        result = runner.invoke(cli, ["collect", folder, *args])
        assert result.exit_code == 0, result.output
        line = f"train on them: mlfactory train {printed} data.source=labelled-{folder}\n"
        assert line in result.output
        overrides = [f"data.source=labelled-{folder}"]
        assert load_recipe(printed, overrides).name == own.name  # the bundle's recipe
    assert load_recipe("image", ["data.source=labelled-image"]).name != own.name  # packaged
