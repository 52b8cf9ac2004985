"""The MLflow-store helpers: how URLs with passwords are shown, and stores MLflow cannot use
(a plain path, a file that is no database, a database of something else) refused in one line
by every command that looks a target up, and left as they were."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import create_engine, inspect, make_url, text
from typer.testing import CliRunner

from mlfactory.bundle import load_bundle
from mlfactory.cli import app
from mlfactory.config.schema import TrackingConfig
from mlfactory.errors import ConfigError
from mlfactory.mlflow_store import check_tracking_store, hide_password, mlflow_client, shown_url
from mlfactory.tracking import TrackedRun
from tests.postgres import postgres_url  # noqa: F401  (the fixture)
from tests.serving.tiny_bundles import tiny_bundle
from tests.test_cli import assert_one_line_error

runner = CliRunner()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://ml:s3cret@db:5432/log", "postgresql+psycopg://ml:***@db:5432/log"),
        ("sqlite:///runs/predictions.db", "sqlite:///runs/predictions.db"),
        # SQLAlchemy cannot parse these (a port that is no number, an unclosed IPv6 bracket):
        # the password is masked all the same.
        ("postgresql://ml:s3cret@db:port/log", "postgresql://ml:***@db:port/log"),
        ("postgresql://ml:s3cret@[::1/log", "postgresql://ml:***@[::1/log"),
        ("not a url", "not a url"),
    ],
)
def test_a_shown_url_never_holds_the_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "s3cret" not in shown_url(url)


def test_hide_password_masks_the_uri_password_wherever_the_text_repeats_it() -> None:
    uri = "https://user:tok3n@mlflow.example.com"
    text = f"cannot reach {uri}: 401 for tok3n"
    assert hide_password(text, uri) == (
        "cannot reach https://user:***@mlflow.example.com: 401 for ***"
    )
    assert hide_password("no password here", "sqlite:///mlruns.db") == "no password here"


def test_hide_password_masks_a_token_user_and_fragment_credentials() -> None:
    uri = "https://ghp_T0KEN@mlflow.example.com/#access_token=fr4gment&state=1"
    text = f"cannot reach {uri}: 401 for ghp_T0KEN (fr4gment)"
    shown = hide_password(text, uri)
    assert "ghp_T0KEN" not in shown and "fr4gment" not in shown
    assert shown.endswith("#access_token=***&state=1: 401 for *** (***)")
    # a database URL's lone user name is no credential (PGPASSWORD pairs with it)
    uri = "postgresql+psycopg://mlf@db/mlflow"
    assert hide_password(f"{uri} refused mlf", uri) == f"{uri} refused mlf"


def test_a_short_password_is_not_masked_inside_other_words() -> None:
    uri = "postgresql+psycopg://u:p@127.0.0.1:1/x"
    text = f"{uri} cannot be used: (psycopg.OperationalError) port 1 failed"
    assert hide_password(text, uri) == (
        "postgresql+psycopg://u:***@127.0.0.1:1/x cannot be used: "
        "(psycopg.OperationalError) port 1 failed"
    )


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def _tracked_bundle(folder: Path) -> str:
    """A bundle that names an MLflow run, as `register` takes it."""
    bundle = load_bundle(tiny_bundle(folder, "image"))
    bundle.meta.mlflow_run_id = "0" * 32
    bundle.save_meta()
    return str(bundle.path)


@pytest.mark.parametrize("kind", ["plain path", "no database", "another database"])
def test_a_store_mlflow_cannot_use_is_one_line_and_left_as_it_was(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain path is MLflow's file store, which it refuses; a SQLite file that is no database
    is SQLAlchemy's traceback; one of another application's would get MLflow's tables."""
    path = tmp_path / "store.db"
    if kind == "plain path":
        uri, said = str(path), f"the MLflow store {path} cannot be used: The filesystem tracking"
    elif kind == "no database":
        path.write_bytes(b"not a database\n")
        uri = f"sqlite:///{path}"
        said = f"{path} cannot be read as a SQLite database: file is not a database"
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE orders (id INTEGER)")
        uri = f"sqlite:///{path}"
        said = f"{path} is a SQLite database of something else (tables orders), not an MLflow"
    before = path.read_bytes() if path.exists() else None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for args in (
        ["register", _tracked_bundle(tmp_path / "tracked")],
        ["fetch", "0" * 32, "--out", str(tmp_path / "out")],
        ["predict", "models:/digits/1", "x.png"],
        ["monitor", "models:/digits/1"],
    ):
        result = runner.invoke(app, args)
        assert_one_line_error(result, said)
        assert "(MLFLOW_TRACKING_URI names the store)" in result.output
    with pytest.raises(ConfigError, match="cannot be used"):
        mlflow_client()
    assert (path.read_bytes() if path.exists() else None) == before
    assert not (tmp_path / "out").exists()


def test_an_mlflow_store_and_an_empty_database_are_used(tmp_path: Path) -> None:
    store = tmp_path / "mlruns.db"
    MlflowClient(f"sqlite:///{store}").create_experiment("digits")
    client, _ = mlflow_client(f"sqlite:///{store}")
    assert client.get_experiment_by_name("digits") is not None
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty SQLite database: a new store
    mlflow_client(f"sqlite:///{empty}")[0].search_experiments()
    assert {"experiments", "alembic_version"} <= _tables(empty)


def test_train_and_a_bundle_s_run_never_make_another_database_a_store(tmp_path: Path) -> None:
    """`train` checks `tracking.tracking_uri` before the data (one line); evaluate and profile
    look a bundle's run up with `TrackedRun.find`, for which such a store holds no run."""
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER)")
    before = path.read_bytes()
    foreign = TrackingConfig(tracking_uri=f"sqlite:///{path}")
    with pytest.raises(ConfigError) as caught:
        check_tracking_store(foreign)
    assert f"{path} is a SQLite database of something else (tables orders)" in str(caught.value)
    assert "(tracking.tracking_uri names the store)" in str(caught.value)
    assert TrackedRun.find(foreign, "0" * 32) is None
    plain = TrackingConfig(tracking_uri=str(tmp_path / "plain"))
    assert TrackedRun.find(plain, "0" * 32) is None  # MLflow's file store, which it refuses
    assert path.read_bytes() == before and _tables(path) == {"orders"}


def _postgres_tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_no_command_makes_a_postgresql_database_of_something_else_a_store(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As for SQLite: MLflow would add its ~40 tables to the database of another application."""
    name = f"appdb_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = make_url(postgres_url).set(database=name, password="s3cret")
    uri = url.render_as_string(hide_password=False)  # the test server trusts any password
    engine = create_engine(uri)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE customers (id INTEGER)"))
    engine.dispose()
    said = "it is a database of something else (tables customers), not an MLflow store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for args in (
        ["fetch", "models:/digits/1", "--out", str(tmp_path / "out")],
        ["register", _tracked_bundle(tmp_path / "tracked")],
    ):
        result = runner.invoke(app, args)
        assert_one_line_error(result, said)
        assert "(MLFLOW_TRACKING_URI names the store)" in result.output
        assert "s3cret" not in result.output
    foreign = TrackingConfig(tracking_uri=uri)
    with pytest.raises(ConfigError, match="tables customers") as caught:
        check_tracking_store(foreign)
    assert "(tracking.tracking_uri names the store)" in str(caught.value)
    assert TrackedRun.find(foreign, "0" * 32) is None
    assert _postgres_tables(uri) == {"customers"}
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["folder", "under a file", "in memory", "memory file"])
def test_a_sqlite_store_no_run_could_be_kept_in_is_refused_before_the_data(
    kind: str, tmp_path: Path
) -> None:
    """A folder, a file under a regular file (as a folder that cannot be written: root writes
    anywhere), an in-memory store: one line at once, not minutes of MLflow's retries after the
    data, nor a run id no store holds."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "afile").write_text("a file")
    uri, said = {
        "folder": (f"sqlite:///{tmp_path / 'runs'}", f"{tmp_path / 'runs'} is a folder"),
        "under a file": (
            f"sqlite:///{tmp_path / 'afile' / 'sub' / 'm.db'}",
            f"{tmp_path / 'afile'} is a file, so the store's folder",
        ),
        "in memory": ("sqlite:///", "is an in-memory SQLite store"),
        "memory file": ("sqlite:///:memory:", "give a file (sqlite:///mlruns.db)"),
    }[kind]
    for command in ("train", "sweep"):
        args = [command, "digits", f"data.cache_dir={tmp_path / 'cache'}"]
        args += [f"tracking.tracking_uri={uri}", "--out", str(tmp_path / "out")]
        if command == "sweep":
            args += ["trainer.lr=choice(0.1,0.01)", "--storage", str(tmp_path / "optuna.db")]
        result = runner.invoke(app, args)
        assert_one_line_error(result, f"tracking.tracking_uri={uri}")
        assert said in result.output
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "optuna.db").exists()
    with pytest.raises(ConfigError, match=r"cannot be made|folder|in-memory"):
        check_tracking_store(TrackingConfig(tracking_uri=uri))


def test_a_new_store_in_folders_not_made_yet_is_created(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'new' / 'sub' / 'mlruns.db'}"
    check_tracking_store(TrackingConfig(tracking_uri=uri))
    assert MlflowClient(uri).search_experiments()  # MLflow makes the folders and the file
