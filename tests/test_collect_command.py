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
from mlfactory.serving.input_store import InputStore
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
    line = f"train on them: mlfactory train {image_bundle} data.source={out.resolve()}\n"
    assert line in result.output
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


def test_labelled_texts_become_a_csv_and_a_label_without_input_is_warned_of(
    tmp_path: Path,
) -> None:
    store, log = tmp_path / "inputs", f"sqlite:///{tmp_path / 'predictions.db'}"
    bundle = tiny_bundle(tmp_path / "bundle", "text")  # labels crude, grain, ship
    settings = ServingSettings(log_url=log, input_store=str(store))
    texts = ["crude oil prices rose, said traders", "wheat exports fell in March"]
    serve_and_label(bundle, settings, [{"json": {"texts": [t]}} for t in texts], ["crude", "grain"])
    out = tmp_path / "dataset"
    args = ["--inputs", str(store), "--log", log, "--out", str(out)]
    result = runner.invoke(cli, ["collect", str(bundle), *args])
    assert result.exit_code == 0, result.output
    with (out / "texts.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"text": texts[0], "label": "crude"}, {"text": texts[1], "label": "grain"}]
    assert "2 labelled inputs of 'tiny-text' written to" in result.output
    # Trained on these alone, the model would lose `ship`: the line says so, before the hint.
    warning = (
        "warning: no input labelled ship: a model trained on this data alone will not know "
        "that label; merge the data the model was trained on (its recipe's data.source) into "
    )
    assert warning in result.output
    hint = f"train on them: mlfactory train {bundle} data.source={out.resolve() / 'texts.csv'}"
    assert result.output.index(warning) < result.output.index(hint)

    serve_and_label(bundle, settings, [{"json": {"texts": ["a tanker docked"]}}], ["ship"])
    every = collect_labelled(str(bundle), tmp_path / "every", str(store), log)
    assert every.written == 3 and every.missing == 0 and every.unseen_labels == []
    assert every.source == (tmp_path / "every" / "texts.csv").resolve()  # what data.source names
    again = runner.invoke(cli, ["collect", str(bundle), *args[:4], "--out", str(tmp_path / "a")])
    assert again.exit_code == 0 and "warning:" not in again.output, again.output


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
            ["--inputs", "{tmp}/store", "--out", "{tmp}/d", "--log", "{tmp}/predictions.db"],
            "is empty: no prediction was logged yet (is the server writing there?)",
        ),
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
    assert not (tmp_path / "d").exists()


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
        # The data by its absolute path: the bundle it trains records it, read from anywhere.
        absolute = (tmp_path / f"labelled-{folder}").resolve()
        line = f"train on them: mlfactory train {printed} data.source={absolute}\n"
        assert line in result.output
        overrides = [f"data.source={absolute}"]
        assert load_recipe(printed, overrides).name == own.name  # the bundle's recipe
    assert load_recipe("image", ["data.source=labelled-image"]).name != own.name  # packaged


def test_a_label_of_another_model_sharing_the_request_id_is_not_written_as_a_class(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    """Two models log to one log, and a client sent both the same X-Request-ID. The server
    gives the second request an id of its own, so the news label stays the news model's; a
    log written before it did holds both under one id, and there the news label joins the
    digit's prediction too, but is no label of the digits model."""
    store, path = tmp_path / "inputs", tmp_path / "predictions.db"
    log = f"sqlite:///{path}"
    settings = ServingSettings(log_url=log, input_store=str(store))
    news = tiny_bundle(tmp_path / "news", "text")
    shared, digits = {"X-Request-ID": "shared-1"}, digit_images[:2]
    posts = [{"files": [upload("d.png", d.read_bytes())], "headers": shared} for d in digits[:1]]
    posts.append({"files": [upload("d.png", digits[1].read_bytes())]})
    serve_and_label(image_bundle, settings, posts, [None, digits[1].label])
    text = {"json": {"texts": ["crude oil prices rose"]}, "headers": shared}
    serve_and_label(news, settings, [text], ["crude"])

    args = ["--inputs", str(store), "--log", log]
    result = runner.invoke(cli, ["collect", str(image_bundle), *args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "1 labelled inputs" in result.output and "not the model's" not in result.output

    with sqlite3.connect(path) as connection:  # as a log written before ids were made unique
        rows = connection.execute(
            "SELECT request_id FROM predictions WHERE requested_id = 'shared-1' ORDER BY id"
        ).fetchall()
        assert len(rows) == 2 and rows[0][0] == "shared-1" != rows[1][0]
        news_id = rows[1][0]
        for table in ("predictions", "feedback"):
            connection.execute(
                f"UPDATE {table} SET request_id = 'shared-1' WHERE request_id = ?", (news_id,)
            )
    out = tmp_path / "dataset"
    result = runner.invoke(cli, ["collect", str(image_bundle), *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 labelled inputs" in result.output
    assert "1 labels that are not the model's (another model's, sent under a" in result.output
    assert [path.parent.name for path in out.rglob("*.png")] == [digits[1].label]
    assert not (out / "crude").exists()
    # The news model's own collection has it, under its own label.
    texts = collect_labelled(str(news), tmp_path / "news-data", str(store), log)
    assert dict(texts.per_label) == {"crude": 1} and texts.not_the_models == 0


def test_predictions_labelled_before_the_server_kept_inputs_are_counted_and_left_out(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    store, path = tmp_path / "inputs", tmp_path / "predictions.db"
    settings = ServingSettings(log_url=f"sqlite:///{path}", input_store=str(store))
    digits = digit_images[:3]
    posts = [{"files": [upload("d.png", d.read_bytes())]} for d in digits]
    serve_and_label(image_bundle, settings, posts, [d.label for d in digits])
    with sqlite3.connect(path) as connection:  # logged before the column was filled
        connection.execute("UPDATE predictions SET input_sha256 = NULL WHERE id = 1")
    args = ["--inputs", str(store), "--log", str(path)]
    result = runner.invoke(cli, ["collect", str(image_bundle), *args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "2 labelled inputs" in result.output
    assert "1 labelled before the server kept inputs (no input_sha256 in the log)" in result.output
    assert len(list((tmp_path / "a").rglob("*.png"))) == 2

    with sqlite3.connect(path) as connection:  # a log of the layout before the column
        connection.execute("ALTER TABLE predictions DROP COLUMN input_sha256")
    out = tmp_path / "b"
    result = runner.invoke(cli, ["collect", str(image_bundle), *args, "--out", str(out)])
    nothing = "no labelled input of 'digits-serving-test' to collect: 3 labelled before the"
    assert_one_line_error(result, f"{nothing} server kept inputs")
    assert not out.exists()


def test_a_log_without_the_models_predictions_or_labels_is_one_error_line(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    store, path = tmp_path / "inputs", tmp_path / "predictions.db"
    settings = ServingSettings(log_url=f"sqlite:///{path}", input_store=str(store))
    news = tiny_bundle(tmp_path / "news", "text")
    serve_and_label(news, settings, [{"json": {"texts": ["crude oil prices rose"]}}], ["crude"])
    out = tmp_path / "dataset"
    args = ["--inputs", str(store), "--log", str(path), "--out", str(out)]
    result = runner.invoke(cli, ["collect", str(image_bundle), *args])
    absent = f"no prediction of digits-serving-test in the log at sqlite:///{path}; it holds"
    assert_one_line_error(result, f"{absent} tiny-text 1.0.0 (1)")
    assert not out.exists()

    posts = [{"files": [upload("d.png", d.read_bytes())]} for d in digit_images[:2]]
    serve_and_label(image_bundle, settings, posts, [None, None])  # predicted, never labelled
    result = runner.invoke(cli, ["collect", str(image_bundle), *args])
    unlabelled = "nothing labelled to collect: no label was sent for the 2 predictions of"
    assert_one_line_error(result, f"{unlabelled} digits-serving-test in the log")
    assert not out.exists()
    result = runner.invoke(cli, ["collect", str(news), *args])  # the other model's is there
    assert result.exit_code == 0, result.output


def test_a_store_that_fails_or_a_ctrl_c_midway_leaves_no_dataset_and_a_rerun_works(
    image_bundle: Path,
    digit_images: list[DigitImage],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, log = tmp_path / "inputs", f"sqlite:///{tmp_path / 'predictions.db'}"
    digits = digit_images[:3]
    posts = [{"files": [upload("d.png", d.read_bytes())]} for d in digits]
    settings = ServingSettings(log_url=log, input_store=str(store))
    serve_and_label(image_bundle, settings, posts, [d.label for d in digits])
    shard = store / hashlib.sha256(digits[-1].read_bytes()).hexdigest()[:2]  # read last
    shutil.rmtree(shard)
    shard.write_bytes(b"")  # its shard folder replaced by a file
    out = tmp_path / "dataset"
    args = ["--inputs", str(store), "--log", log, "--out", str(out)]
    result = runner.invoke(cli, ["collect", str(image_bundle), *args])
    assert_one_line_error(result, f"cannot read the input store {store}: Not a directory: {shard}")
    assert sorted(tmp_path.iterdir()) == [store, tmp_path / "predictions.db"]  # nor its .tmp

    shard.unlink()  # the store mended (that input lost); Ctrl-C once two inputs are written
    read, calls = InputStore.read, []

    def read_then_stopped(self: InputStore, digest: str) -> bytes | None:
        calls.append(digest)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read(self, digest)

    monkeypatch.setattr(InputStore, "read", read_then_stopped)
    out.mkdir()  # an empty folder given: left as it was
    with pytest.raises(KeyboardInterrupt):
        collect_labelled(str(image_bundle), out, str(store), log)
    assert len(calls) == 3 and list(out.iterdir()) == []
    assert sorted(tmp_path.iterdir()) == [out, store, tmp_path / "predictions.db"]
    monkeypatch.undo()
    result = runner.invoke(cli, ["collect", str(image_bundle), *args])
    assert result.exit_code == 0, result.output
    assert "2 labelled inputs" in result.output and "1 no longer in the store" in result.output
    here = tmp_path / "here"  # `--out .` in an empty folder: the dataset is written into it
    here.mkdir()
    monkeypatch.chdir(here)
    result = runner.invoke(cli, ["collect", str(image_bundle), *args[:4], "--out", "."])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in out.iterdir())


def test_a_correction_sent_for_the_same_request_replaces_its_label_uncounted(
    image_bundle: Path, digit_images: list[DigitImage], tmp_path: Path
) -> None:
    """The log keeps one label per prediction: a second label for the same request replaces
    the first, so only inputs sent in several requests count as relabelled (docs/cli.md)."""
    store, log = tmp_path / "inputs", f"sqlite:///{tmp_path / 'predictions.db'}"
    settings = ServingSettings(log_url=log, input_store=str(store))
    digit, other = digit_images[0], "7" if digit_images[0].label != "7" else "1"
    with TestClient(create_app(image_bundle, settings)) as client:
        answer = client.post("/v1/predict", files=[upload("d.png", digit.read_bytes())])
        for label in (other, digit.label):  # a mistake, then its correction
            sent = {"request_id": answer.json()["request_id"], "label": label}
            assert client.post("/v1/feedback", json=sent).status_code == 200
    out = tmp_path / "dataset"
    result = collect_labelled(str(image_bundle), out, str(store), log)
    assert result.relabelled == 0 and result.written == 1
    assert [path.parent.name for path in out.rglob("*.png")] == [digit.label]
