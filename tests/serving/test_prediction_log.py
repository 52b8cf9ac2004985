"""The prediction log: group commits from many callers, WAL SQLite, clear errors, durable rows."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text

from mlfactory.errors import ConfigError
from mlfactory.mlflow_store import REACH_TIMEOUT_S
from mlfactory.serving.log_database import connect_args
from mlfactory.serving.prediction_log import (
    LoggedPrediction,
    PredictionLog,
    PredictionLogError,
    predictions,
    upgrade_schema,
)
from tests.first_release_log import write_first_release_log
from tests.monitoring.test_log_window_errors import HANG_S, ends_within, silent_server


def row(request_id: str, index: int = 0) -> LoggedPrediction:
    return LoggedPrediction(
        request_id=request_id,
        input_index=index,
        model_name="digits",
        model_version="1.2.3",
        input_summary={"bytes": 10, "width": 28, "height": 28},
        embedding=[0.5, -0.25, 0.0],
        probabilities={"cat": 0.75, "dog": 0.25},
        label="cat",
        score=0.75,
        latency_ms=12.5,
    )


@pytest.fixture
def prediction_log(tmp_path: Path) -> PredictionLog:
    log = PredictionLog(f"sqlite:///{tmp_path / 'logs' / 'predictions.db'}")
    log.start()
    yield log  # type: ignore[misc]
    log.close()


def test_rows_round_trip(prediction_log: PredictionLog) -> None:
    prediction_log.submit([row("r1", 0), row("r1", 1)]).result(timeout=10)
    first, second = prediction_log.read()
    assert (first.request_id, first.input_index, second.input_index) == ("r1", 0, 1)
    assert first.input_summary == {"bytes": 10, "width": 28, "height": 28}
    assert first.embedding == [0.5, -0.25, 0.0]
    assert first.probabilities == {"cat": 0.75, "dog": 0.25}
    assert (first.label, first.score, first.latency_ms) == ("cat", 0.75, 12.5)
    assert first.id is not None and second.id == first.id + 1
    assert [r.input_index for r in prediction_log.read(since_id=first.id)] == [1]


def test_sqlite_runs_in_wal_mode_with_normal_sync(prediction_log: PredictionLog) -> None:
    with prediction_log.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_concurrent_callers_are_group_committed(prediction_log: PredictionLog) -> None:
    commits = 0

    def count(*args: object) -> None:
        nonlocal commits
        commits += 1

    from sqlalchemy import event

    event.listen(prediction_log.engine, "commit", count)

    async def many() -> None:
        await asyncio.gather(*(prediction_log.write([row(f"r{i}")]) for i in range(200)))

    asyncio.run(many())
    assert len(prediction_log.read()) == 200
    assert 1 <= commits < 200  # the writer commits whole groups, not one row at a time


def test_a_step_before_the_commit_that_fails_keeps_only_its_own_rows_out(
    prediction_log: PredictionLog,
) -> None:
    release, ran = threading.Event(), []

    def step(name: str) -> None:
        ran.append(name)
        if name == "r1":
            raise OSError(28, "No space left on device")

    # The writer holds the first request in its step while the others queue: one group.
    first = prediction_log.submit([row("first")], lambda: release.wait(10))
    futures = [
        prediction_log.submit([row(name)], lambda name=name: step(name))
        for name in ("r0", "r1", "r2")
    ]
    futures.append(prediction_log.submit([row("r3")]))  # a request with no step
    release.set()
    first.result(timeout=10)
    assert futures[0].result(timeout=10) is None
    with pytest.raises(OSError, match="No space left"):
        futures[1].result(timeout=10)
    assert futures[2].result(timeout=10) is None and futures[3].result(timeout=10) is None
    assert ran == ["r0", "r1", "r2"]  # each step ran once, before the commit
    assert [r.request_id for r in prediction_log.read()] == ["first", "r0", "r2", "r3"]


def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    log = PredictionLog(url)
    log.start()
    futures = [log.submit([row(f"r{i}")]) for i in range(50)]
    log.close()
    assert all(future.done() and future.exception() is None for future in futures)
    assert len(PredictionLog(url).read()) == 50


def test_a_failed_commit_fails_its_callers(prediction_log: PredictionLog) -> None:
    with prediction_log.engine.begin() as connection:
        connection.execute(text("DROP TABLE predictions"))
    with pytest.raises(PredictionLogError, match="could not be written"):
        asyncio.run(prediction_log.write([row("lost")]))


def test_submit_before_start_fails(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(PredictionLogError, match="not running"):
        log.submit([row("x")]).result(timeout=1)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "is not an SQLAlchemy URL"),
        ("sqlite://", "is in memory; name a database file"),
        ("nosuchdb+driver://host/db", "names an unknown database"),
        ("postgresql+nosuchdriver://u:topsecret@localhost/db", "names an unknown database"),
        # psycopg is optional: without it this is the install hint, with it a refused connection.
        ("postgresql+psycopg://u:topsecret@127.0.0.1:9/db", "not installed|cannot open the log"),
    ],
)
def test_bad_urls_are_one_line_config_errors(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        PredictionLog(url)
    assert "\n" not in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_a_log_server_that_never_answers_is_a_config_error_not_a_hang() -> None:
    with silent_server() as port:
        url = f"postgresql+psycopg://u@127.0.0.1:{port}/db?connect_timeout=2"
        started = time.monotonic()
        raised = ends_within(HANG_S, lambda: PredictionLog(url))
        waited = time.monotonic() - started
    assert isinstance(raised, ConfigError), raised
    assert "cannot open the log" in str(raised) and "\n" not in str(raised)
    # the URL's timeout, not the default 10 s (a bound of correctness, not a timing: 2 s is
    # libpq's wait, 10 s would be ours overriding it)
    assert waited < REACH_TIMEOUT_S


def test_the_urls_own_connection_arguments_win_over_the_defaults() -> None:
    defaults = connect_args(make_url("postgresql+psycopg://u@db.example/log"))
    assert defaults["connect_timeout"] == int(REACH_TIMEOUT_S)
    assert defaults["keepalives"] == 1
    given = connect_args(make_url("postgresql+psycopg://u@db/log?connect_timeout=3&keepalives=0"))
    assert "connect_timeout" not in given and "keepalives" not in given
    assert given["keepalives_idle"] == defaults["keepalives_idle"]
    reading = connect_args(make_url("mysql+pymysql://u@db/log?read_timeout=5"), reading=True)
    assert reading == {"connect_timeout": int(REACH_TIMEOUT_S)}
    assert connect_args(make_url("sqlite:///p.db")) == {}


def test_unwritable_location_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="MLFACTORY_LOG_URL"):
        PredictionLog(f"sqlite:///{tmp_path / 'file' / 'sub' / 'p.db'}")


def test_committed_rows_survive_kill_9(tmp_path: Path) -> None:
    """A process killed right after its commits returned loses none of them."""
    database = tmp_path / "p.db"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})  # the module imports tests.*
        from test_prediction_log import row
        from mlfactory.serving.prediction_log import PredictionLog
        log = PredictionLog({f"sqlite:///{database}"!r})
        log.start()
        for i in range(100):
            log.submit([row(f"r{{i}}")]).result(timeout=10)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=120, check=False)
    assert result.returncode == -9
    with sqlite3.connect(database) as connection:  # a fresh reader replays the WAL
        count = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert count == 100


def test_read_filters_by_time_and_limit(prediction_log: PredictionLog) -> None:
    old, new = row("old"), row("new")
    old.ts = datetime(2026, 1, 1, tzinfo=UTC)
    new.ts = datetime(2026, 6, 1, tzinfo=UTC)
    prediction_log.submit([old, new, row("now")]).result(timeout=10)
    since = datetime(2026, 3, 1, tzinfo=UTC)
    assert [r.request_id for r in prediction_log.read(since=since)] == ["new", "now"]
    assert [r.request_id for r in prediction_log.read(limit=1)] == ["old"]


def test_a_row_that_cannot_be_stored_fails_only_its_own_request(
    prediction_log: PredictionLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe's case: a NaN score (NOT NULL in SQLite) in a group of good requests. The
    server's log names the request before its caller hears of the failure."""
    database = tmp_path / "logs" / "predictions.db"
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # holds the writer at its first commit, so a group queues up
    first = prediction_log.submit([row("first")])
    deadline = time.monotonic() + 10
    while prediction_log.pending and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer took `first` and waits for the lock
    bad = row("bad")
    bad.score = float("nan")
    group = [prediction_log.submit([row(f"good-{i}")]) for i in range(3)]
    group.insert(1, prediction_log.submit([bad]))
    lock.execute("ROLLBACK")
    lock.close()
    assert first.result(timeout=30) is None
    with pytest.raises(PredictionLogError, match=r"NOT NULL constraint failed: predictions\.score"):
        group[1].result(timeout=30)
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert errors == [
        "could not write request bad to the prediction log: "
        "NOT NULL constraint failed: predictions.score"
    ]
    assert [future.result(timeout=30) for i, future in enumerate(group) if i != 1] == [None] * 3
    stored = [logged.request_id for logged in prediction_log.read()]
    assert stored == ["first", "good-0", "good-1", "good-2"]


def test_lag_is_the_wait_of_the_oldest_uncommitted_request(
    prediction_log: PredictionLog, tmp_path: Path
) -> None:
    assert prediction_log.lag_s() == 0.0
    lock = sqlite3.connect(tmp_path / "logs" / "predictions.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the database is busy: the writer waits at its commit
    first = prediction_log.submit([row("first")])
    time.sleep(0.3)
    second = prediction_log.submit([row("second")])
    waited = prediction_log.lag_s()
    assert waited >= 0.3  # the oldest waiting request counts, not the newest
    time.sleep(0.1)
    assert prediction_log.lag_s() > waited  # grows while nothing is committed
    lock.execute("ROLLBACK")
    lock.close()
    assert first.result(timeout=30) is None and second.result(timeout=30) is None
    assert prediction_log.lag_s() == 0.0


def test_a_log_of_the_first_release_is_upgraded_and_stays_readable(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    write_first_release_log(database, [0.5])

    log = PredictionLog(f"sqlite:///{database}")  # upgrades the table on open
    with sqlite3.connect(database) as connection:
        columns = [r[1] for r in connection.execute("PRAGMA table_info(predictions)")]
    assert columns[-8:] == [
        "model_run_id",
        "data_fingerprint",
        "embedding_f16",
        "ood_score",
        "in_distribution",
        "ood_scorer",
        "input_sha256",
        "requested_id",
    ]
    log.start()
    new = row("new")
    new.model_run_id, new.data_fingerprint = "3f9c2d0e8b7a4c1d9e6f5a4b3c2d1e0f", "1ef4aacdd47332bd"
    log.submit([new]).result(timeout=10)
    old_row, new_row = log.read()
    log.close()
    assert (old_row.request_id, old_row.label) == ("old", "cat")
    assert old_row.input_summary == {"bytes": 9}
    assert (old_row.model_run_id, old_row.data_fingerprint) == (None, None)
    assert old_row.input_sha256 is None
    assert new_row.model_run_id == "3f9c2d0e8b7a4c1d9e6f5a4b3c2d1e0f"
    assert new_row.data_fingerprint == "1ef4aacdd47332bd"
    assert upgrade_schema(PredictionLog(f"sqlite:///{database}").engine, predictions) == []


def test_a_missing_column_that_is_not_nullable_is_refused(tmp_path: Path) -> None:
    from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    old = Table("things", MetaData(), Column("id", Integer, primary_key=True))
    old.metadata.create_all(engine)
    wider = Table(
        "things",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("note", String(10), nullable=True),
        Column("kind", String(10), nullable=False),
    )
    with pytest.raises(ValueError, match="lacks column kind, which is not nullable"):
        upgrade_schema(engine, wider)
    nullable = Table(
        "things",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("note", String(10), nullable=True),
    )
    assert upgrade_schema(engine, nullable) == ["note"]


def test_a_log_without_the_window_index_gains_it_and_windows_use_it(any_log_url: str) -> None:
    from sqlalchemy import event

    from mlfactory.monitoring.log_window import window_from_engine

    index = "ix_predictions_model_version_id"
    log = PredictionLog(any_log_url)
    log.start()
    log.submit([row("a"), row("b")]).result(timeout=10)
    log.close()
    with log.engine.begin() as connection:  # a log written before the index existed
        connection.execute(text(f"DROP INDEX {index}"))
    log.engine.dispose()

    engine = PredictionLog(any_log_url).engine  # opening it adds the index back
    statements: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2:4]))
    assert len(window_from_engine(engine, "digits", "1.2.3", last=10)) == 2
    query, parameters = next(s for s in statements if "predictions.model_name" in s[0])
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            explain = "EXPLAIN QUERY PLAN "
        else:  # two rows: make the planner show whether the index can serve the query
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            explain = "EXPLAIN "
        plan = " ".join(str(r[-1]) for r in connection.exec_driver_sql(explain + query, parameters))
    engine.dispose()
    assert index in plan


def test_workers_opening_a_new_log_at_once_all_open_it(any_log_url: str) -> None:
    """Replicas or `--workers N` starting together race to create the tables and indexes."""
    import threading

    barrier, errors, engines = threading.Barrier(6), [], []

    def open_log() -> None:
        barrier.wait()
        try:
            engines.append(PredictionLog(any_log_url).engine)
        except ConfigError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=open_log) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert len(engines) == 6


def test_writes_go_on_after_the_database_drops_its_connections(postgres_url: str) -> None:
    """As after a restart or failover of the database server: no prediction is refused."""
    from sqlalchemy import create_engine, make_url

    name = f"log_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    log = PredictionLog(url)
    log.start()
    log.submit([row("before")]).result(timeout=10)
    with admin.connect() as connection:
        dropped = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        ).scalar_one()
    admin.dispose()
    assert dropped >= 1  # the log's pooled connection
    log.submit([row("after")]).result(timeout=10)
    assert [r.request_id for r in log.read()] == ["before", "after"]
    log.close()
