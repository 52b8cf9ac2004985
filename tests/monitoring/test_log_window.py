"""Reading windows of the prediction log: formats, filters, feedback, old logs, clear errors."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import URL, insert

from mlfactory.errors import LogDatabaseError
from mlfactory.monitor_command import log_url_or_default
from mlfactory.monitoring import log_window
from mlfactory.monitoring.log_window import read_window
from mlfactory.monitoring.profile import ReferenceProfile
from mlfactory.monitoring.report import check_window
from mlfactory.serving.log_tables import feedback
from mlfactory.serving.prediction_log import LoggedPrediction, PredictionLog
from tests.first_release_log import write_first_release_log
from tests.monitoring.conftest import DigitOutputs, Outputs

LABELS = [str(digit) for digit in range(10)]


def log_outputs(
    url: str,
    outputs: Outputs,
    model: tuple[str, str] = ("digits", "1"),
    ood_scores: np.ndarray | None = None,
    start: datetime | None = None,
) -> list[LoggedPrediction]:
    """Write `outputs` to the log at `url`, one request per input, a second apart."""
    start = start or datetime.now(UTC) - timedelta(seconds=len(outputs))
    rows = []
    for i in range(len(outputs)):
        values = outputs.probabilities[i]
        probabilities = {label: float(p) for label, p in zip(LABELS, values, strict=True)}
        best = max(probabilities, key=probabilities.__getitem__)
        rows.append(
            LoggedPrediction(
                request_id=f"{model[0]}-{model[1]}-{i}",
                input_index=0,
                model_name=model[0],
                model_version=model[1],
                input_summary=outputs.summaries[i],
                embedding=outputs.embeddings[i],
                probabilities=probabilities,
                label=best,
                score=probabilities[best],
                latency_ms=float(i % 7 + 1),
                ood_score=None if ood_scores is None else float(ood_scores[i]),
                in_distribution=None,
                ts=start + timedelta(seconds=i),
            )
        )
    log = PredictionLog(url)
    log.start()
    log.submit(rows).result(timeout=30)
    log.close()
    return rows


def test_a_logged_window_reads_back_as_it_was_served(
    log_url: str, digit_outputs: DigitOutputs, digit_profile: ReferenceProfile
) -> None:
    held_out = digit_outputs.held_out
    scores = digit_profile.ood.score(held_out.embeddings, held_out.early)
    log_outputs(log_url, held_out, ood_scores=scores)
    log_outputs(log_url, digit_outputs.stamps, model=("digits", "2"))  # another version

    window = read_window(log_url, "digits", "1", labels=LABELS)
    assert len(window) == len(held_out)
    # float16 keeps 11 significant bits: a relative error of at most 2**-11 per value.
    np.testing.assert_allclose(window.embeddings, held_out.embeddings, rtol=2**-11, atol=1e-7)
    np.testing.assert_allclose(window.probabilities, held_out.probabilities, rtol=1e-6)
    assert window.summaries == held_out.summaries
    assert window.ood_scores is not None
    np.testing.assert_allclose(window.ood_scores, scores)
    assert window.true_labels == [None] * len(held_out)
    assert list(window.timestamps) == sorted(window.timestamps)

    from_log = check_window(digit_profile, window, {"name": "digits", "version": "1"})
    in_memory = check_window(
        digit_profile, held_out.window(digit_profile), {"name": "digits", "version": "1"}
    )
    assert (from_log.n, from_log.drift) == (in_memory.n, in_memory.drift)
    assert from_log.ood_fraction == in_memory.ood_fraction
    assert from_log.estimated.value == pytest.approx(in_memory.estimated.value, abs=1e-6)


def test_last_and_since_pick_the_newest_rows_oldest_first(
    log_url: str, digit_outputs: DigitOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_window, "CHUNK_ROWS", 3)  # windows read across several chunks
    part = digit_outputs.held_out.take(np.arange(30))
    rows = log_outputs(log_url, part, start=datetime.now(UTC) - timedelta(hours=2))
    newest = log_outputs(log_url, part.take(np.arange(5)))  # within the last minute

    last = read_window(log_url, "digits", "1", last=8, labels=LABELS)
    assert list(last.request_ids) == [r.request_id for r in (rows[-3:] + newest)]
    recent = read_window(log_url, "digits", "1", since=timedelta(minutes=1), labels=LABELS)
    assert len(recent) == 5
    both = read_window(log_url, "digits", "1", last=2, since=timedelta(hours=3), labels=LABELS)
    assert list(both.request_ids) == [r.request_id for r in newest[-2:]]
    whole = read_window(log_url, "digits", "1", last=1000, labels=LABELS)
    assert list(whole.request_ids) == [r.request_id for r in rows + newest]
    expected = np.concatenate([part.embeddings, part.embeddings[:5]])
    np.testing.assert_allclose(whole.embeddings, expected, rtol=2**-11, atol=1e-7)
    np.testing.assert_allclose(
        whole.probabilities, np.concatenate([part.probabilities, part.probabilities[:5]]), rtol=1e-6
    )


def test_a_sqlite_log_is_read_where_it_is_and_never_created(
    tmp_path: Path, digit_outputs: DigitOutputs
) -> None:
    """A file named with URL characters, given as a path, is read; a URL whose query asks
    SQLite for a URI filename opens the log, not a new file named after the query."""
    odd = tmp_path / "log #1?.db"
    log_outputs(URL.create("sqlite", database=str(odd)).render_as_string(), digit_outputs.stamps)
    url = log_url_or_default(str(odd))
    assert len(read_window(url, "digits", "1", labels=LABELS)) == len(digit_outputs.stamps)
    plain = tmp_path / "log.db"
    odd.rename(plain)
    window = read_window(f"sqlite:///{plain}?foo=1&uri=true", "digits", "1", labels=LABELS)
    assert len(window) == len(digit_outputs.stamps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.db"]


def test_feedback_labels_join_their_predictions(log_url: str, digit_outputs: DigitOutputs) -> None:
    part = digit_outputs.held_out.take(np.arange(6))
    rows = log_outputs(log_url, part)
    log, now = PredictionLog(log_url), datetime.now(UTC)
    with log.engine.begin() as connection:
        connection.execute(
            insert(feedback),
            [
                {"request_id": rows[r].request_id, "input_index": i, "label": label, "ts": now}
                for r, i, label in ((1, 0, "7"), (4, 0, "2"), (4, 3, "5"))
            ],
        )
    log.close()
    window = read_window(log_url, "digits", "1", labels=LABELS)
    assert window.true_labels == [None, "7", None, None, "2", None]


def test_an_empty_log_and_another_models_log_are_empty_windows(
    log_url: str, tmp_path: Path, digit_outputs: DigitOutputs
) -> None:
    PredictionLog(log_url).close()  # tables, no rows
    assert len(read_window(log_url, "digits", "1")) == 0
    log_outputs(log_url, digit_outputs.held_out.take(np.arange(3)), model=("news", "1"))
    empty = read_window(log_url, "digits", "1", labels=LABELS)
    assert len(empty) == 0 and empty.probabilities.shape == (0, 10)
    bare = tmp_path / "bare.db"
    sqlite3.connect(bare).close()  # a database file without the log's tables
    assert len(read_window(f"sqlite:///{bare}", "digits", "1")) == 0


def test_a_log_with_json_embeddings_reads_without_an_upgrade(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    write_first_release_log(database, [0.5, -0.25, 3.0])
    window = read_window(f"sqlite:///{database}", "digits", "1")
    assert window.embeddings.tolist() == [[0.5, -0.25, 3.0]]
    assert window.probabilities.tolist() == [[0.75, 0.25]]  # the row's own label order
    assert window.ood_scores is None and window.true_labels == [None]
    assert window.timestamps[0] == datetime(2026, 1, 1, tzinfo=UTC)


def test_embeddings_of_two_widths_under_one_model_are_a_one_line_error(
    log_url: str, digit_outputs: DigitOutputs
) -> None:
    outputs = digit_outputs.held_out.take(np.arange(4))
    narrow = outputs.take(np.arange(2))
    narrow.embeddings = narrow.embeddings[:, :384]  # another model, the same name and version
    log_outputs(log_url, narrow, start=datetime.now(UTC) - timedelta(minutes=5))
    log_outputs(log_url, outputs)
    assert read_window(log_url, "digits", "1", last=4).embeddings.shape == (4, 1280)
    wrong = "of digits 1 are 384 and 1280 wide: another model"
    with pytest.raises(LogDatabaseError, match=wrong) as raised:
        read_window(log_url, "digits", "1")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "not an SQLAlchemy URL"),
        ("sqlite:///{tmp}/missing.db", "no prediction log at"),
        ("sqlite+nosuchdriver:///{tmp}/garbage.db", "unknown kind of database"),
        ("sqlite:///{tmp}/garbage.db", "cannot read the prediction log"),
    ],
)
def test_an_unusable_log_is_a_one_line_error(tmp_path: Path, url: str, fragment: str) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(LogDatabaseError, match=fragment) as raised:
        read_window(url.format(tmp=tmp_path), "digits", "1")
    assert "\n" not in str(raised.value)


def test_an_unreachable_database_server_is_a_one_line_error() -> None:
    """Nothing listens on port 1: refused at once (or the driver is missing, also one line)."""
    url = "postgresql+psycopg://monitor@127.0.0.1:1/log"
    expected = "cannot read the prediction log" if find_spec("psycopg") else "not installed"
    with pytest.raises(LogDatabaseError, match=expected) as raised:
        read_window(url, "digits", "1")
    assert "\n" not in str(raised.value)
