"""Whether an MLflow store answers, asked before MLflow's own client (which retries for minutes),
and the bounds on how long MLflow's client waits for a server that fails or does not answer
(`mlflow_store` uses it wherever a command opens the store)."""

from __future__ import annotations

import base64
import functools
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from mlfactory.errors import BundleError, first_line

# How long an MLflow server may take to answer at all before it counts as unreachable.
REACH_TIMEOUT_S = 10.0
# Schemes whose user name, given without a password, is a credential (a token as basic auth):
# `without_password` leaves it out. `git+https` and the like count by their last part.
TOKEN_USER_SCHEMES = frozenset({"http", "https"})
# Database stores whose first connection is tried before MLflow's (`_database_answers`).
DATABASE_SCHEMES = ("postgresql", "mysql")
# Tables every MLflow SQL store has: a database with other tables and not these is no store.
MLFLOW_TABLES = frozenset({"alembic_version", "experiments"})
# How long a store another process is creating (some of MLflow's tables, not all) is waited for.
STORE_CREATION_WAIT_S = 60.0
# MLflow's HTTP client waits 120 s for each answer and retries a failure 7 times with a back-off
# that doubles: minutes of silence for a server that fails or hangs after /health answers.
# These bounds (where the environment sets none) make that one error within about a minute:
# 30 s for each answer (a server answers an upload once its artifact store holds the file),
# and one retry.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
# MLflow writes "View run ... at: URL" to stdout when a run on a server ends: mlfactory's stdout
# is what its commands print (a bundle path), nothing else.
QUIET_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def bound_mlflow_waits(*uris: str) -> None:
    """Before an MLflow client opens one of `uris`: for an HTTP(S) server, bound MLflow's
    timeout and retries (`HTTP_LIMITS`), and keep MLflow's run links off stdout; a variable the
    environment sets already is left as it is."""
    os.environ.setdefault(QUIET_URLS, "true")
    if any(uri.startswith(("http://", "https://")) for uri in uris):
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)


def without_password(uri: str) -> str:
    """`uri` (`scheme://user:password@host/...`) without its password, which the environment
    gives where it is used again (PGPASSWORD or ~/.pgpass for PostgreSQL, MLFLOW_TRACKING_PASSWORD
    for a server); anything else unchanged.

    The user name is kept, for the environment's password pairs with it; but an http(s) URL's
    user name without a password is itself the credential (`https://ghp_TOKEN@github.com/...`,
    a token as basic auth), and is left out with it. A database URL's lone user name
    (`postgresql://mlf@db/mlflow`, the password from PGPASSWORD) is kept.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        password = parts.password
    except ValueError:  # not a URL that can be split (an unbalanced `[` in its host)
        return uri
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return uri
    if password is None and parts.scheme.lower().rpartition("+")[2] in TOKEN_USER_SCHEMES:
        return urllib.parse.urlunsplit(parts._replace(netloc=host))
    if password is None:
        return uri
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def shown_url(url: str) -> str:
    """A database URL as it may be shown: its password as ***, and so the values of its
    credential query parameters (`?password=***`, see `without_query_secrets`). SQLAlchemy
    renders the URLs it parses; one it cannot parse (a port that is no number) is masked
    between `user:` and `@`."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from mlfactory.data.downloads import without_query_secrets

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        shown = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return without_query_secrets(shown)


def hide_password(text: str, uri: str) -> str:
    """`text` with the password of `uri` (`scheme://user:password@host/...`), and the values of
    its credential query parameters (`?password=...`), shown as *** wherever they stand on
    their own: a short password is not masked inside other words (`p` in `postgresql`), where
    it says nothing."""
    for secret in url_secrets(uri):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def url_secrets(uri: str) -> list[str]:
    """The credentials in `uri`, as given and URL-decoded: its password, an http(s) URL's lone
    user name (a token, see `without_password`), and the values of the credential fields
    (`SECRET_QUERY_NAMES`) of its query and fragment (`?password=...`, `#access_token=...`)."""
    from mlfactory.data.downloads import SECRET_QUERY_NAMES

    try:
        parts = urllib.parse.urlsplit(uri)
        password, user = parts.password, parts.username
    except ValueError:  # not a URL that can be split (an unbalanced `[` in its host)
        return []
    fields = [
        *urllib.parse.parse_qsl(parts.query, keep_blank_values=False),
        *urllib.parse.parse_qsl(parts.fragment, keep_blank_values=False),
    ]
    found = [value for name, value in fields if name.lower() in SECRET_QUERY_NAMES]
    found += [password] if password else []
    token_user = parts.scheme.lower().rpartition("+")[2] in TOKEN_USER_SCHEMES
    found += [user] if user and password is None and token_user else []
    found += [urllib.parse.unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


@functools.cache
def reachable(uri: str) -> None:
    """Refuse an MLflow server that does not answer at all (refused, unknown host, silent),
    in one error after `REACH_TIMEOUT_S`, instead of MLflow's retries with back-off, which
    take minutes. Any HTTP answer will do: the MLflow call that follows reports it. A database
    store is tried as `database_tables` does.

    Raises:
        BundleError: the server or database does not answer.
    """
    if uri.startswith(DATABASE_SCHEMES):
        database_tables(uri)
        return
    if not uri.startswith(("http://", "https://")):
        return
    try:
        request, context = health_request(uri)
        with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S, context=context):
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = hide_password(str(getattr(exc, "reason", exc)), uri)
        raise BundleError(f"the MLflow server {shown_url(uri)} does not answer: {reason}") from None


def health_request(uri: str) -> tuple[urllib.request.Request, ssl.SSLContext | None]:
    """The request for the server's /health, as MLflow's client would send it: the URI's
    `user:password@` (which urllib would read as part of the host) or MLFLOW_TRACKING_USERNAME
    and MLFLOW_TRACKING_PASSWORD as basic auth, and TLS as MLFLOW_TRACKING_INSECURE_TLS,
    MLFLOW_TRACKING_SERVER_CERT_PATH and MLFLOW_TRACKING_CLIENT_CERT_PATH set it."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit(parts._replace(netloc=host, path=parts.path.rstrip("/")))
    request = urllib.request.Request(f"{url}/health")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or urllib.parse.unquote(parts.username or "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or urllib.parse.unquote(
        parts.password or ""
    )
    if user or password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    if parts.scheme != "https":
        return request, None
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1")
    server_cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    elif server_cert and os.path.isdir(server_cert):
        context.load_verify_locations(capath=server_cert)
    elif server_cert:
        context.load_verify_locations(cafile=server_cert)
    client_cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
    if client_cert:
        context.load_cert_chain(client_cert)
    return request, context


@functools.cache
def database_tables(uri: str) -> frozenset[str] | None:
    """The tables of a PostgreSQL or MySQL store, once it has answered within
    `REACH_TIMEOUT_S`: MLflow retries a new engine's first connection with back-off for almost
    two minutes. None for a URI SQLAlchemy cannot use (no driver, malformed), which MLflow
    reports, or one of no such database.

    Raises:
        BundleError: the database refuses the connection or does not answer.
    """
    if not uri.startswith(DATABASE_SCHEMES):
        return None
    from sqlalchemy import create_engine, inspect, make_url
    from sqlalchemy.exc import OperationalError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from mlfactory.serving.log_database import connect_args  # each driver's connect timeout

    try:
        parsed = make_url(uri)
        engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args(parsed))
    except (SQLAlchemyError, ImportError, ValueError, TypeError):
        return None
    try:
        with engine.connect() as connection:
            return frozenset(inspect(connection).get_table_names())
    except OperationalError as exc:
        reason = hide_password(first_line(exc.orig or exc), uri)
        raise BundleError(
            f"the database {shown_url(uri)} cannot be reached or refused the connection: {reason}"
        ) from None
    except (SQLAlchemyError, ImportError, TypeError):
        return None  # MLflow says what is wrong with it
    finally:
        engine.dispose()


def foreign_database_problem(uri: str) -> str | None:
    """Why the PostgreSQL or MySQL database of `uri` cannot be an MLflow store: it holds tables,
    and not MLflow's (MLflow would add its own to it); None for an empty database (a new store),
    an MLflow store, or another URI.

    A database whose tables are all MLflow's but not yet the ones every store has is a store
    another process is creating right now (two workers of a sweep started together): it is
    waited for, up to `STORE_CREATION_WAIT_S`, and never called another program's database.

    Raises:
        BundleError: the database cannot be reached (`database_tables`).
    """
    found = database_tables(uri)
    if not found or found >= MLFLOW_TABLES:
        return None
    if found <= mlflow_table_names():
        _wait_for_store_creation(uri)
        return None
    shown = ", ".join(sorted(found)[:3]) + (", ..." if len(found) > 3 else "")
    return (
        f"it is a database of something else (tables {shown}), not an MLflow store; "
        "it was left unchanged"
    )


@functools.cache
def mlflow_table_names() -> frozenset[str]:
    """Every table MLflow's SQL store creates (tracking and Model Registry)."""
    # Importing their models adds the tracking and Model Registry tables to the metadata.
    import mlflow.store.model_registry.dbmodels.models
    import mlflow.store.tracking.dbmodels.models  # noqa: F401
    from mlflow.store.db.base_sql_model import Base

    return frozenset(Base.metadata.tables) | {"alembic_version"}


def _wait_for_store_creation(uri: str) -> None:
    """Until the tables every MLflow store has are there (another process creates them), at
    most `STORE_CREATION_WAIT_S`: MLflow then opens a whole store, not half of one."""
    deadline = time.monotonic() + STORE_CREATION_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        found = database_tables.__wrapped__(uri)
        if found is not None and found >= MLFLOW_TABLES:
            database_tables.cache_clear()
            return
