"""An MLflow server that answers /health and then fails or never answers is one line within
seconds, not MLflow's minutes of retries; the probe of a server reaches it as MLflow's client
does (credentials in the URI, TLS settings), and never shows the URI's password. Each server
here is a tiny HTTP server on a free loopback port."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlfactory.cli import app
from mlfactory.errors import BundleError
from mlfactory.mlflow_reach import HTTP_LIMITS, QUIET_URLS, bound_mlflow_waits, reachable
from mlfactory.serving.process import HOST, free_port
from tests.postgres import fresh_database, postgres_url  # noqa: F401  (the fixture)
from tests.test_cli import assert_one_line_error

runner = CliRunner()
# MLflow's own defaults (120 s a request, 7 retries) would take minutes: well above this.
BOUNDED_S = 40


class _Handler(BaseHTTPRequestHandler):
    """/health is 200; every other path is 503 (`failing`) or never answered."""

    server: _TinyServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.server.authorizations.append(self.headers.get("Authorization"))
        if self.path.startswith("/health") or self.server.failing:
            status = 200 if self.path.startswith("/health") else 503
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
            return
        self.server.released.wait(120)  # silent until the test ends

    def log_message(self, format: str, *args: object) -> None:
        pass


class _TinyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, failing: bool) -> None:
        super().__init__((HOST, 0), _Handler)
        self.failing = failing
        self.released = threading.Event()
        self.authorizations: list[str | None] = []


@contextmanager
def tiny_server(failing: bool = True, tls: ssl.SSLContext | None = None) -> Iterator[_TinyServer]:
    """A `_TinyServer` on a free loopback port, serving until the block ends."""
    server = _TinyServer(failing)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _url(server: _TinyServer, scheme: str = "http", userinfo: str = "") -> str:
    return f"{scheme}://{userinfo}{HOST}:{server.server_address[1]}"


@pytest.fixture
def mlflow_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP settings unset, and unset again after the test (a command sets them)."""
    for name in (*HTTP_LIMITS, QUIET_URLS, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")  # recorded, so that the test's end removes it
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("failing", "said"),
    [(True, "too many 503 error responses"), (False, "Read timed out. (read timeout=2)")],
    ids=["503 to every call", "silent API"],
)
def test_a_server_that_fails_or_hangs_after_health_is_one_line_within_seconds(
    failing: bool, said: str, mlflow_defaults: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's retries are bounded (the default answer timeout, 30 s, is the user's to set:
    2 s here, so that the silent server costs the suite seconds, not a minute)."""
    with tiny_server(failing) as server:
        if not failing:
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", _url(server))
        started = time.monotonic()
        result = runner.invoke(app, ["fetch", "models:/digits/1", "--out", str(tmp_path / "x")])
        waited = time.monotonic() - started
    assert_one_line_error(result, said)
    assert waited < BOUNDED_S, (waited, result.output)
    assert not (tmp_path / "x").exists()
    expected = {**HTTP_LIMITS, **({} if failing else {"MLFLOW_HTTP_REQUEST_TIMEOUT": "2"})}
    assert {name: os.environ[name] for name in HTTP_LIMITS} == expected


def test_mlflow_settings_the_environment_gives_are_kept(
    mlflow_defaults: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    monkeypatch.setenv(QUIET_URLS, "false")
    bound_mlflow_waits("sqlite:///mlruns.db")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # no server: nothing to bound
    bound_mlflow_waits("https://mlflow.example.com")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ[QUIET_URLS] == "false"


def test_the_probe_sends_the_uri_s_credentials_as_basic_auth(mlflow_defaults: None) -> None:
    """urllib reads `user:password@` as part of the host name: the probe sends it as MLflow's
    client (requests) does."""
    with tiny_server() as server:
        reachable(_url(server, userinfo="alice:hunter2@"))
    token = base64.b64encode(b"alice:hunter2").decode()
    assert server.authorizations == [f"Basic {token}"]


def test_a_server_s_password_is_never_shown(
    mlflow_defaults: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://alice:hunter2@{HOST}:{free_port()}"  # nobody listens there
    with pytest.raises(BundleError) as caught:
        reachable(uri)
    assert f"the MLflow server http://alice:***@{HOST}:" in str(caught.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = runner.invoke(app, ["fetch", "models:/digits/1", "--out", str(tmp_path / "x")])
    assert_one_line_error(result, "alice:***@")
    assert "hunter2" not in result.output


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key: (certificate, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key_file


@pytest.mark.parametrize(
    "setting", ["MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH"]
)
def test_a_self_signed_server_is_reached_as_mlflow_s_tls_settings_say(
    setting: str, mlflow_defaults: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for name in ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    with tiny_server(tls=tls) as server:
        uri = _url(server, "https")
        with pytest.raises(BundleError, match="CERTIFICATE_VERIFY_FAILED"):
            reachable(uri)  # not cached: it raised
        monkeypatch.setenv(setting, "true" if setting.endswith("INSECURE_TLS") else str(cert))
        reachable(uri)
    assert server.authorizations == [None]


def test_a_credential_in_a_url_s_query_is_never_shown() -> None:
    from mlfactory.mlflow_reach import hide_password, shown_url

    url = "postgresql+psycopg://mlf@db:5432/optuna?password=s3cret&sslmode=require"
    assert shown_url(url) == "postgresql+psycopg://mlf@db:5432/optuna?password=***&sslmode=require"
    assert shown_url("postgresql://u:pw@h:port/x?password=s3cret") == (
        "postgresql://u:***@h:port/x?password=***"  # a URL SQLAlchemy cannot parse too
    )
    said = 'connection to "db" failed for password s3cret and pw'
    assert hide_password(said, url) == 'connection to "db" failed for password *** and pw'


def test_a_store_another_process_is_creating_is_waited_for_not_called_foreign(
    postgres_url: str,  # noqa: F811
) -> None:
    """Some of MLflow's tables and not yet alembic_version: MLflow is creating the store (a
    worker started at the same moment). It is waited for; the tables of another program are
    still refused."""
    from sqlalchemy import create_engine, text

    from mlfactory.mlflow_reach import database_tables, foreign_database_problem

    half, shop = (fresh_database(postgres_url, name) for name in ("mlflow_half", "shop"))
    engine = create_engine(half)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE experiments (experiment_id INTEGER)"))
        connection.execute(text("CREATE TABLE metrics (key TEXT)"))

    def finish_creating() -> None:
        time.sleep(1.5)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num TEXT)"))

    finisher = threading.Thread(target=finish_creating)
    finisher.start()
    started = time.monotonic()
    try:
        assert foreign_database_problem(half) is None
        assert time.monotonic() - started >= 1.0  # it waited for the store to be whole
    finally:
        finisher.join()
        engine.dispose()
    assert database_tables(half) is not None and "alembic_version" in database_tables(half)
    with create_engine(shop).begin() as connection:
        connection.execute(text("CREATE TABLE experiments (experiment_id INTEGER)"))
        connection.execute(text("CREATE TABLE orders (id INTEGER)"))
    problem = foreign_database_problem(shop)
    assert problem is not None and "database of something else (tables experiments, orders)" in (
        problem
    )
