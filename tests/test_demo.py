"""The demo loop end to end (prepare, train, bundle, register, serve over HTTP, predict, send
labels back, monitor), made small."""

from __future__ import annotations

import itertools
import re
import shlex
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from mlfactory.bundle import load_bundle
from mlfactory.demo import run_demo
from mlfactory.demo_folder import DEMO_MARK, NEXT_RUN, claim_demo_folder
from mlfactory.errors import MlfactoryError
from mlfactory.monitor_command import monitor_bundle
from mlfactory.registry import bundle_digest, find_version

from .conftest import fast_digits_overrides


def test_demo_runs_the_whole_loop(digit_folder: Path, tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    out = tmp_path / "demo"
    overrides = fast_digits_overrides(digit_folder, tmp_path, epochs=1)
    run_demo(out, console, overrides=overrides)
    text = console.export_text()
    assert (out / "bundle" / "model.onnx").is_file()
    assert str((out / "bundle").resolve()) in text
    assert "majority class" in text and "logistic regression" in text
    assert "mlflow ui --backend-store-uri" in text
    # the bundle is the registry's champion, in the demo's own store, and served as such
    store = next(o.split("=", 1)[1] for o in overrides if o.startswith("tracking.tracking_uri="))
    registered = find_version("models:/digits@champion", store)
    # the registry's version and the bundle's own, told apart
    version = load_bundle(out / "bundle").meta.version
    assert (
        f"registry: {registered.uri} (bundle version {version}), alias champion\n  in {store}\n"
        in text
    )
    assert registered.digest == bundle_digest(out / "bundle")
    # the command that serves the champion names the store it is registered in
    assert f"MLFLOW_TRACKING_URI={shlex.quote(store)} " in text
    assert "serve models:/digits@champion --port 8000\n" in text
    assert "held-out file" in text and "in distribution" in text
    # the monitor command it prints reads the demo server's log by its file path
    log_file = (out / "predictions.db").resolve()
    assert f"--log {log_file}" in text
    result = monitor_bundle(str(out / "bundle"), str(log_file))
    # the examples' OOD column names the threshold that decides "in distribution"
    assert f"OOD score (threshold {result.report.ood_threshold:.2f})" in text
    sent = int(re.search(r"(\d+) held-out files: ", text).group(1))  # type: ignore[union-attr]
    assert sent >= 30 and result.report.n == 2 * sent  # the held-out files, then inverted
    assert result.report.live.n == result.report.n  # every label came back
    # each stream was checked on its own: the inverted one drifts, far out of distribution
    inverted = next(line for line in text.splitlines() if f"the same {sent} inverted" in line)
    assert ": DRIFT; out of distribution 100%" in inverted
    # the requests carried the demo's own ids: the report names its inputs by them
    shown = text[text.index(inverted) :]
    top = re.search(
        r"\n    most out of distribution:\n      request inverted-\d{4} input \d+ .*, "
        r"true (\d)\)\n      the file (\S+)",
        shown,
    )
    assert top is not None
    # the file it names, by its path, is the one sent there: a digit of the true label
    named = Path(top.group(2))
    assert named.is_file() and named.parent == digit_folder / top.group(1)
    # no line of the summary is wider than a terminal of 80 columns but the commands to copy
    # and the paths of files (as long as the folders they are in)
    summary = text[text.index("4/5 monitoring") : text.index("5/5 results")]
    lines = [line for line in summary.splitlines() if not line.strip().startswith("the file /")]
    assert max(len(line) for line in lines) <= 80, summary
    flagged = result.report.flagged
    assert flagged and all(re.fullmatch(r"inverted-\d{4}", item.request_id) for item in flagged)
    assert f"--last {sent} --html monitor.html" in text
    # the held-out files arrive mixed, as live traffic does, not one label after another (each
    # span of the report's history would be a label-prior shift): in the split's order the
    # true label changes once per label, here at every other file or more often
    with sqlite3.connect(log_file) as log:
        labels = [
            label
            for (label,) in log.execute(
                "SELECT f.label FROM predictions p JOIN feedback f ON f.request_id = p.request_id "
                "AND f.input_index = p.input_index ORDER BY p.id LIMIT ?",
                (sent,),
            )
        ]
    changes = sum(a != b for a, b in itertools.pairwise(labels))
    assert len(labels) == sent and changes >= sent // 2 > 2 * len(set(labels)), labels
    # the server was stopped: its log exists and shows a clean shutdown
    log = (out / "server.log").read_text()
    assert "Uvicorn running on http://127.0.0.1:" in log
    assert not (out / NEXT_RUN).exists()  # the run it trained was moved into the folder


def test_the_demo_replaces_only_a_demo_folder(tmp_path: Path) -> None:
    from mlfactory.cli import app
    from tests.test_cli import assert_one_line_error, runner

    users = tmp_path / "my-run"
    (users / "bundle").mkdir(parents=True)
    (users / "bundle" / "bundle.json").write_text("{}")
    assert_one_line_error(
        runner.invoke(app, ["demo", "--out", str(users)]), "holds files that no demo wrote"
    )
    # untouched: refused before anything was written
    assert sorted(p.name for p in users.rglob("*")) == ["bundle", "bundle.json"]
    # a user's run.json and server.log do not make a folder an earlier demo's
    (users / "run.json").write_text("mine")
    (users / "server.log").write_text("mine")
    with pytest.raises(MlfactoryError, match="holds files that no demo wrote"):
        claim_demo_folder(users)
    assert not (users / DEMO_MARK).exists()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert_one_line_error(runner.invoke(app, ["demo", "--out", str(a_file)]), "is a file")
    # a new folder (made now), an earlier demo's, an empty one
    assert claim_demo_folder(tmp_path / "new") is True
    assert claim_demo_folder(tmp_path / "new") is False
    assert (tmp_path / "new" / DEMO_MARK).is_file()
    (tmp_path / "empty").mkdir()
    claim_demo_folder(tmp_path / "empty")
