"""`mlfactory monitor` on real prediction logs of a real digits bundle, written by the server's
own `PredictionLog`: the table, the JSON contract, the HTML report, and one line for each way
there is nothing to check."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ImageOps
from sqlalchemy import insert
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.monitoring.profile import ReferenceProfile, load_profile
from mlfactory.serving.log_tables import feedback
from mlfactory.serving.prediction_log import LoggedPrediction, PredictionLog
from mlfactory.serving.process import free_port
from tests.monitoring.conftest import DigitOutputs, Outputs, far_digits
from tests.postgres import postgres_url  # noqa: F401  (the fixture)
from tests.test_cli import assert_one_line_error

runner = CliRunner()
CONTRACT_CHECK_KEYS = {"name", "kind", "statistic", "p_value", "drift"}


@pytest.fixture(scope="module")
def profiled_bundle(
    monitored_digits: Any, digit_profile: ReferenceProfile, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the digits bundle with its monitoring profile saved beside the model."""
    folder = tmp_path_factory.mktemp("profiled") / "bundle"
    shutil.copytree(monitored_digits.bundle.path, folder)
    digit_profile.save(folder)
    return folder


def write_log(
    url: str,
    outputs: Outputs,
    name: str,
    version: str,
    start: datetime | None = None,
    labelled_every: int = 0,
    profile: ReferenceProfile | None = None,
    run_id: str | None = None,
) -> None:
    """Log `outputs` as the server does, one prediction a second from `start`, with the OOD
    scores of `profile` (the served bundle's) when given, and the true label of every
    `labelled_every`-th one as `POST /v1/feedback` stores it (none when 0)."""
    start = start or datetime.now(UTC) - timedelta(seconds=len(outputs))
    scores = None if profile is None else profile.ood.score(outputs.embeddings, outputs.early)
    labels = [str(i) for i in range(outputs.probabilities.shape[1])]
    rows = []
    for i in range(len(outputs)):
        probabilities = outputs.probabilities[i]
        top = int(np.argmax(probabilities))
        rows.append(
            LoggedPrediction(
                request_id=f"{name}-{i}",
                input_index=0,
                model_name=name,
                model_version=version,
                model_run_id=run_id,
                input_summary=outputs.summaries[i],
                embedding=outputs.embeddings[i],
                probabilities=dict(zip(labels, map(float, probabilities), strict=True)),
                label=labels[top],
                score=float(probabilities[top]),
                ood_score=None if scores is None else float(scores[i]),
                latency_ms=1.0,
                ts=start + timedelta(seconds=i),
            )
        )
    log = PredictionLog(url)
    log.start()
    try:
        log.submit(rows).result(timeout=60)
    finally:
        log.close()
    if labelled_every:
        with log.engine.begin() as connection:
            connection.execute(
                insert(feedback),
                [
                    {"request_id": row.request_id, "input_index": 0, "label": label, "ts": start}
                    for row, label in list(zip(rows, outputs.labels, strict=True))[::labelled_every]
                ],
            )
    log.engine.dispose()


def log_served(bundle: Path, url: str, outputs: Outputs, **options: Any) -> None:
    """Log `outputs` as the server of `bundle` does: its name, version, MLflow run and OOD
    scores (`options` may name another run)."""
    name, version = _model(bundle)
    options.setdefault("run_id", json.loads((bundle / "bundle.json").read_text())["mlflow_run_id"])
    write_log(url, outputs, name, version, profile=_profile(bundle), **options)


def _profile(bundle: Path) -> ReferenceProfile:
    profile = load_profile(bundle)
    assert profile is not None
    return profile


def _model(bundle: Path) -> tuple[str, str]:
    meta = json.loads((bundle / "bundle.json").read_text())
    return meta["name"], meta["version"]


def _monitor(bundle: Path, *args: str) -> Any:
    return runner.invoke(app, ["monitor", str(bundle), *args])


def test_held_out_traffic_gives_the_json_contract_without_drift(
    profiled_bundle: Path, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    name, version = _model(profiled_bundle)
    # A random sample: the file's order is not class-balanced.
    rows = np.random.default_rng(0).permutation(len(digit_outputs.held_out))[:300]
    log_served(profiled_bundle, url, digit_outputs.held_out.take(rows))
    result = _monitor(profiled_bundle, "--log", url, "--json", "--last", "250")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["model"] == {"name": name, "version": version}
    assert report["window"]["n"] == 250
    assert report["window"]["from"] < report["window"]["to"]
    fired = [(c["name"], c["p_value"], c["detail"]) for c in report["checks"] if c["drift"]]
    assert report["drift"] is False and report["status"] == "no drift", fired
    assert {check["kind"] for check in report["checks"]} == {
        "feature",
        "label",
        "confidence",
        "embedding",
    }
    for check in report["checks"]:
        assert set(check) >= CONTRACT_CHECK_KEYS
    assert set(report["ood"]) >= {"fraction", "threshold"}
    assert 0.0 <= report["ood"]["fraction"] < 0.05
    accuracy = report["accuracy"]
    low, high = accuracy["estimated_ci"]
    assert low <= accuracy["estimated"] <= high
    assert accuracy["labelled"] == 0 and accuracy["live"] is None
    failing = _monitor(profiled_bundle, "--log", url, "--last", "250", "--fail-on-drift")
    assert failing.exit_code == 0, failing.output  # no drift: the flag changes nothing


def test_inverted_digits_drift_in_the_table_and_the_html_report(
    profiled_bundle: Path, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    name = _model(profiled_bundle)[0]
    rows = np.random.default_rng(0).permutation(len(digit_outputs.held_out))[:150]
    inverted = digit_outputs.transform(ImageOps.invert).take(rows)
    log_served(profiled_bundle, url, inverted, labelled_every=2)
    html = tmp_path / "report.html"
    result = _monitor(profiled_bundle, "--log", url, "--html", str(html))
    assert result.exit_code == 0, result.output
    assert "DRIFT" in result.output
    assert "brightness_mean" in result.output and "embedding" in result.output
    assert "out of distribution" in result.output
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 4
    assert name in page and "brightness_mean" in page
    # beside the estimate, the mean confidence it is read against: the window's, the reference's
    accuracy = json.loads(_monitor(profiled_bundle, "--log", url, "--json").output)["accuracy"]
    shown = (
        f"mean confidence {accuracy['mean_confidence']:.3f}, "
        f"{accuracy['reference_confidence']:.3f} on the reference"
    )
    assert accuracy["mean_confidence"] < accuracy["reference_confidence"]  # inverted: less sure
    assert shown in " ".join(result.output.split()) and shown in page
    # and a note that the estimate does not cover inputs unlike the reference
    note = "of the inputs are out of distribution (1% expected)"
    assert "note: " in result.output and note in " ".join(result.output.split())
    assert note in page
    # the HTML report never overwrites what it read: the log, a file of the bundle
    log, meta = tmp_path / "log.db", profiled_bundle / "bundle.json"
    before = (log.read_bytes(), meta.read_bytes())
    for html_path, problem in ((log, "is the prediction log"), (meta, "is inside the bundle")):
        refused = _monitor(profiled_bundle, "--log", url, "--html", str(html_path))
        assert refused.exit_code == 2 and f"error: --html {html_path} {problem}" in refused.output
    assert (log.read_bytes(), meta.read_bytes()) == before
    # which labels moved, and, labels having come back, which true labels fail most
    report = json.loads(_monitor(profiled_bundle, "--log", url, "--json").output)
    assert [row["label"] for row in report["labels"]] == [str(d) for d in range(10)]
    assert sum(row["labelled"] for row in report["labels"]) == report["accuracy"]["labelled"] == 75
    text = " ".join(result.output.split())
    assert "labels predicted, most changed: " in text
    worst = min(
        (r for r in report["labels"] if r["labelled"]), key=lambda r: (r["live"], -r["labelled"])
    )
    assert f"live accuracy by true label, lowest: {worst['label']} {worst['live']:.3f}" in text
    assert "<h3>Labels</h3>" in page
    # the inputs to look at first: the most out-of-distribution, by request id and position
    flagged = report["ood"]["flagged"]
    assert len(flagged) == 10  # every inverted digit is flagged; ten are listed
    scores = [item["ood_score"] for item in flagged]
    assert scores == sorted(scores, reverse=True) and scores[-1] > report["ood"]["threshold"]
    first = flagged[0]
    assert f"(score above {report['ood']['threshold']:.4g}; 1% expected in distribution)" in text
    shown = result.output[result.output.index("most out of distribution:") :].splitlines()
    assert shown[1].startswith(f"  request {first['request_id']} input 0 (score ")
    assert shown[4] == "  and 7 more (--json, --html)"
    assert "Most out-of-distribution inputs" in page and f">{first['request_id']}<" in page
    # --flagged N lists more (a queue to label) or none
    more = json.loads(_monitor(profiled_bundle, "--log", url, "--json", "--flagged", "40").output)
    assert len(more["ood"]["flagged"]) == 40 and more["ood"]["flagged"][:10] == flagged
    none = _monitor(profiled_bundle, "--log", url, "--flagged", "0")
    assert none.exit_code == 0 and "most out of distribution" not in none.output
    for output in ([], ["--json"]):  # scripts and cron jobs: a drift verdict is exit code 1
        failing = _monitor(profiled_bundle, "--log", url, *output, "--fail-on-drift")
        assert failing.exit_code == 1, failing.output
        assert "DRIFT" in failing.output or json.loads(failing.output)["drift"] is True


def test_a_p_value_below_the_smallest_float_is_shown_as_a_bound(
    profiled_bundle: Path, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_served(profiled_bundle, url, far_digits(digit_outputs))
    report = json.loads(_monitor(profiled_bundle, "--log", url, "--json").output)
    underflowed = [c["name"] for c in report["checks"] if c["p_value"] == 0.0]
    assert underflowed  # a JSON number for tools, as computed
    table = _monitor(profiled_bundle, "--log", url).output
    for name in underflowed:
        row = next(line for line in table.splitlines() if f" {name} " in line)
        assert "< 1e-300" in row, row


def test_the_log_defaults_to_the_environment_then_the_servers_store(
    profiled_bundle: Path,
    digit_outputs: DigitOutputs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held_out = digit_outputs.held_out.take(np.arange(60))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFACTORY_LOG_URL", raising=False)
    log_served(profiled_bundle, "sqlite:///predictions.db", held_out)  # the server's default
    result = _monitor(profiled_bundle, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["window"]["n"] == 60
    elsewhere = tmp_path / "elsewhere.db"
    log_served(profiled_bundle, f"sqlite:///{elsewhere}", held_out.take(np.arange(40)))
    monkeypatch.setenv("MLFACTORY_LOG_URL", f"sqlite:///{elsewhere}")
    result = _monitor(profiled_bundle, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["window"]["n"] == 40
    # the variable holds a path: as the server does, refused, but the line says where from
    monkeypatch.setenv("MLFACTORY_LOG_URL", str(elsewhere))
    result = _monitor(profiled_bundle, "--json")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: MLFACTORY_LOG_URL={elsewhere} is not an SQLAlchemy URL: write "
        f"sqlite:///{elsewhere} for a SQLite file (as the server reads the variable), or give "
        "the file with --log"
    )


def test_the_level_defaults_to_the_servers_setting(
    profiled_bundle: Path,
    digit_outputs: DigitOutputs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cron job's verdict agrees with the server's gauges: both read MLFACTORY_MONITOR_LEVEL."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_served(profiled_bundle, url, digit_outputs.held_out.take(np.arange(60)))
    monkeypatch.delenv("MLFACTORY_MONITOR_LEVEL", raising=False)
    assert json.loads(_monitor(profiled_bundle, "--log", url, "--json").output)["level"] == 0.05
    monkeypatch.setenv("MLFACTORY_MONITOR_LEVEL", "0.01")
    table = _monitor(profiled_bundle, "--log", url)
    assert table.exit_code == 0 and "(level 0.01, holm-corrected p-values)" in table.output
    asked = _monitor(profiled_bundle, "--log", url, "--json", "--level", "0.2")
    assert json.loads(asked.output)["level"] == 0.2
    monkeypatch.setenv("MLFACTORY_MONITOR_LEVEL", "5%")
    result = _monitor(profiled_bundle, "--log", url)
    assert_one_line_error(result, "MLFACTORY_MONITOR_LEVEL: '5%' is not a number")


def test_a_postgresql_log_is_read_like_sqlite(
    profiled_bundle: Path,
    digit_outputs: DigitOutputs,
    postgres_url: str,  # noqa: F811
) -> None:
    name = _model(profiled_bundle)[0]
    log_served(profiled_bundle, postgres_url, digit_outputs.held_out.take(np.arange(80)))
    write_log(postgres_url, digit_outputs.held_out.take(np.arange(20)), "news", "3")
    result = _monitor(profiled_bundle, "--log", postgres_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["window"]["n"] == 80 and report["model"]["name"] == name
    assert report["status"] in ("no drift", "drift")


def test_a_window_too_small_says_insufficient_data_per_check(
    profiled_bundle: Path, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_served(profiled_bundle, url, digit_outputs.held_out.take(np.arange(100)))
    result = _monitor(profiled_bundle, "--log", url, "--last", "12", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "insufficient data" and report["drift"] is False
    assert {check["status"] for check in report["checks"]} == {"insufficient data"}
    assert all(check["p_value"] is None for check in report["checks"])
    table = _monitor(profiled_bundle, "--log", url, "--last", "12")
    assert table.exit_code == 0, table.output
    assert "insufficient data: 12 predictions" in table.output
    # the reason, once and whole after the table, in an 80-column terminal
    assert "every check: 12 window values; the test needs at least" in table.output


def test_the_log_can_be_named_by_its_sqlite_file(
    profiled_bundle: Path, digit_outputs: DigitOutputs, tmp_path: Path, monkeypatch: Any
) -> None:
    name, version = _model(profiled_bundle)
    write_log(
        f"sqlite:///{tmp_path / 'log.db'}",
        digit_outputs.held_out.take(np.arange(40)),
        name,
        version,
    )
    monkeypatch.chdir(tmp_path)
    result = _monitor(profiled_bundle, "--log", "log.db", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["window"]["n"] == 40


def test_since_keeps_the_recent_predictions_only(
    profiled_bundle: Path, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    held_out = digit_outputs.held_out
    old = datetime.now(UTC) - timedelta(days=3)
    log_served(profiled_bundle, url, held_out.take(np.arange(50)), start=old)
    log_served(profiled_bundle, url, held_out.take(np.arange(50, 120)))
    result = _monitor(profiled_bundle, "--log", url, "--since", "2h", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["window"]["n"] == 70
    newest_to = json.loads(result.output)["window"]["to"]
    result = _monitor(profiled_bundle, "--log", url, "--since", "1w", "--json")
    assert json.loads(result.output)["window"]["n"] == 120
    result = _monitor(profiled_bundle, "--log", url, "--since", "2h", "--last", "30", "--json")
    window = json.loads(result.output)["window"]
    assert (window["n"], window["to"]) == (30, newest_to)
    assert not any("holds at least" in note for note in json.loads(result.output)["notes"])


def test_a_period_with_more_than_the_window_holds_is_cut_and_says_so(
    profiled_bundle: Path,
    digit_outputs: DigitOutputs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlfactory.monitoring import log_window

    monkeypatch.setattr(log_window, "MAX_WINDOW_ROWS", 40)  # not 100,000 rows in a test
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_served(profiled_bundle, url, digit_outputs.held_out.take(np.arange(60)))
    result = _monitor(profiled_bundle, "--log", url, "--since", "1d")
    assert result.exit_code == 0, result.output
    assert "note: the last 1d holds at least 40 predictions: this window is the latest 40" in (
        " ".join(result.output.split())
    )
    result = _monitor(profiled_bundle, "--log", url, "--since", "1d", "--last", "30", "--json")
    report = json.loads(result.output)
    assert report["window"]["n"] == 30  # a number asked for: nothing was cut
    assert not any("holds at least" in note for note in report["notes"])


def test_predictions_of_another_model_of_the_same_version_are_left_out(
    profiled_bundle: Path, digit_outputs: DigitOutputs, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    other_run = "f" * 32  # a retrained model that kept the name and version
    log_served(profiled_bundle, url, digit_outputs.held_out.take(np.arange(40)), run_id=other_run)
    only_others = _monitor(profiled_bundle, "--log", url)
    assert_one_line_error(only_others, "holds 40 predictions of digits")
    assert "all by another model than this bundle's" in only_others.output
    log_served(profiled_bundle, url, digit_outputs.held_out.take(np.arange(40, 100)))
    log_served(profiled_bundle, url, digit_outputs.held_out.take(np.arange(100, 110)), run_id=None)
    report = json.loads(_monitor(profiled_bundle, "--log", url, "--json").output)
    assert report["window"]["n"] == 70  # its own 60, and 10 logged before run ids were
    assert any("40 predictions logged as digits" in note for note in report["notes"])


def test_nothing_to_check_is_one_line(
    profiled_bundle: Path,
    digit_outputs: DigitOutputs,
    monitored_digits: Any,
    tmp_path: Path,
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    PredictionLog(empty).close()  # a server started and stopped without traffic
    assert_one_line_error(_monitor(profiled_bundle, "--log", empty), "is empty")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    write_log(other, digit_outputs.held_out.take(np.arange(30)), "news", "3")
    assert_one_line_error(_monitor(profiled_bundle, "--log", other), "it holds news 3 (30)")
    old = f"sqlite:///{tmp_path / 'old.db'}"
    three_days = datetime.now(UTC) - timedelta(days=3)
    log_served(profiled_bundle, old, digit_outputs.held_out.take(np.arange(30)), start=three_days)
    result = _monitor(profiled_bundle, "--log", old, "--since", "1d")
    assert_one_line_error(result, "30 older ones")
    # The bundle as exported before monitoring: no profile.
    bare = tmp_path / "bare"
    shutil.copytree(monitored_digits.bundle.path, bare)
    for path in bare.glob("profile.*"):
        path.unlink()
    assert_one_line_error(_monitor(bare, "--log", old), "has no monitoring profile")
    # A bundle whose labels were renamed after its profile was written: not checked against it.
    renamed = tmp_path / "renamed"
    shutil.copytree(monitored_digits.bundle.path, renamed)
    meta = json.loads((renamed / "bundle.json").read_text())
    meta["labels"] = [f"digit {label}" for label in meta["labels"]]
    (renamed / "bundle.json").write_text(json.dumps(meta))
    assert_one_line_error(_monitor(renamed, "--log", old), "is for other labels than the bundle's")


@pytest.mark.parametrize(
    ("log", "fragment"),
    [
        ("sqlite:///{tmp}/no-such.db", "no prediction log at"),
        # psycopg installed: the refused connection; without it, the install hint.
        ("postgresql+psycopg://mlf:secret@127.0.0.1:{port}/log", "prediction log"),
        ("not a url", "not an SQLAlchemy URL"),
        # An SQLite file of something else: not an empty log.
        ("{tmp}/notes.db", "holds no prediction log: it lacks the log's tables predictions and"),
        # The pip package of the default MySQL driver, not its module's name (MySQLdb).
        ("mysql://mlf:secret@127.0.0.1:{port}/log", "not installed (pip install mysqlclient)"),
    ],
)
def test_an_unreachable_log_is_one_line_and_exit_2(
    profiled_bundle: Path, tmp_path: Path, log: str, fragment: str
) -> None:
    if log.startswith("mysql:") and importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("the MySQL driver is installed: there is no hint to give")
    with sqlite3.connect(tmp_path / "notes.db") as notes:
        notes.execute("CREATE TABLE notes (body TEXT)")
    url = log.format(tmp=tmp_path, port=free_port())
    result = _monitor(profiled_bundle, "--log", url)
    assert_one_line_error(result, fragment)
    assert "secret" not in result.output
    assert not (tmp_path / "no-such.db").exists()  # reading never creates a log


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--since", "yesterday"], "is not a duration"),
        (["--since", "99999999999w"], "at most 5218w"),
        (["--last", "0"], "at least 1"),
        (["--last", "100001"], "at most 100,000 predictions"),
        (["--level", "1.5"], "between 0.001 and 1 (1 excluded)"),
        # The server's range (MLFACTORY_MONITOR_LEVEL): no permutation test reaches 1e-300.
        (["--level", "1e-300"], "--level 1e-300: give a false-alarm level between 0.001 and 1"),
        (["--html", ""], "--html is empty"),
        (["--flagged", "1001"], "list 0 to 1,000 out-of-distribution inputs"),
        (["--flagged", "-1"], "list 0 to 1,000 out-of-distribution inputs"),
    ],
)
def test_wrong_arguments_are_one_line(
    profiled_bundle: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = _monitor(profiled_bundle, "--log", f"sqlite:///{tmp_path / 'x.db'}", *args)
    assert_one_line_error(result, fragment)


def test_an_empty_log_is_refused_rather_than_read_as_the_default(
    profiled_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFACTORY_LOG_URL", f"sqlite:///{tmp_path / 'default.db'}")
    for empty in ("", " "):
        assert_one_line_error(_monitor(profiled_bundle, "--log", empty), "--log is empty")
    assert not (tmp_path / "default.db").exists()
