"""ServingSettings: defaults, environment variables, and one-line errors for bad values."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from mlfactory.errors import ConfigError
from mlfactory.monitoring import drift
from mlfactory.serving.settings import (
    LOOPBACK_HOSTS,
    ServingSettings,
    allowed_host_names,
    env_name,
    limits_warning,
    monitor_schedule,
    retention_period,
    unknown_variables_warning,
)


def test_defaults_without_environment() -> None:
    settings = ServingSettings.from_env({})
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_files == 64
    assert settings.ort_intra_op_threads == 0
    assert (settings.max_batch_size, settings.max_wait_ms, settings.workers) == (32, 0.0, 1)
    assert settings.log_url == "sqlite:///predictions.db"
    assert settings.admin_token is None
    assert settings == ServingSettings()


def test_reads_each_field_from_its_variable() -> None:
    environ = {
        "MLFACTORY_MAX_UPLOAD_BYTES": "2048",
        "MLFACTORY_MAX_FILES": " 3 ",
        "MLFACTORY_MAX_TEXT_CHARS": "1_000",
        "MLFACTORY_MAX_REQUEST_BYTES": "4096",
        "MLFACTORY_ORT_INTRA_OP_THREADS": "2",
        "MLFACTORY_UNRELATED": "x",
    }
    settings = ServingSettings.from_env(environ)
    assert (settings.max_upload_bytes, settings.max_files, settings.max_text_chars) == (
        2048,
        3,
        1000,
    )
    assert (settings.max_request_bytes, settings.ort_intra_op_threads) == (4096, 2)


def test_reads_batching_log_and_admin_variables() -> None:
    environ = {
        "MLFACTORY_MAX_BATCH_SIZE": "8",
        "MLFACTORY_MAX_WAIT_MS": "2.5",
        "MLFACTORY_ORT_INTER_OP_THREADS": "1",
        "MLFACTORY_WORKERS": "3",
        "MLFACTORY_LOG_URL": "postgresql+psycopg://mlf:secret@db/predictions",
        "MLFACTORY_ADMIN_TOKEN": " s3cret-token ",
        "MLFACTORY_MONITOR_TOKEN": "m0nitor-token",
    }
    settings = ServingSettings.from_env(environ)
    assert (settings.max_batch_size, settings.max_wait_ms) == (8, 2.5)
    assert (settings.ort_inter_op_threads, settings.workers) == (1, 3)
    assert settings.log_url == "postgresql+psycopg://mlf:secret@db/predictions"
    assert settings.admin_token == "s3cret-token"
    assert settings.monitor_token == "m0nitor-token"
    assert "s3cret" not in repr(settings)  # the tokens never reach a log line
    assert "m0nitor" not in repr(settings)


def test_reads_connection_limits_in_seconds_and_bytes() -> None:
    defaults = ServingSettings()
    assert (defaults.keep_alive_timeout_s, defaults.header_timeout_s) == (5.0, 10.0)
    assert (defaults.body_timeout_s, defaults.max_header_bytes) == (15.0, 32768)
    assert (defaults.max_connections, defaults.admin_failures_per_minute) == (512, 10)
    environ = {
        "MLFACTORY_KEEP_ALIVE_TIMEOUT_S": "2",
        "MLFACTORY_HEADER_TIMEOUT_S": "0.5",
        "MLFACTORY_BODY_TIMEOUT_S": "30",
        "MLFACTORY_MAX_HEADER_BYTES": "16_384",
        "MLFACTORY_MAX_CONNECTIONS": "100",
        "MLFACTORY_ADMIN_FAILURES_PER_MINUTE": "3",
    }
    settings = ServingSettings.from_env(environ)
    assert (settings.keep_alive_timeout_s, settings.header_timeout_s) == (2.0, 0.5)
    assert (settings.body_timeout_s, settings.max_header_bytes) == (30.0, 16384)
    assert (settings.max_connections, settings.admin_failures_per_minute) == (100, 3)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFACTORY_MAX_FILES", "7")
    assert ServingSettings.from_env().max_files == 7


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MLFACTORY_MAX_FILES", "many", "MLFACTORY_MAX_FILES: 'many' is not an integer"),
        ("MLFACTORY_MAX_UPLOAD_BYTES", "0", "MLFACTORY_MAX_UPLOAD_BYTES: 0 must be >= 1"),
        ("MLFACTORY_ORT_INTRA_OP_THREADS", "-1", "MLFACTORY_ORT_INTRA_OP_THREADS: -1 must be"),
        ("MLFACTORY_MAX_BATCH_SIZE", "0", "MLFACTORY_MAX_BATCH_SIZE: 0 must be >= 1"),
        ("MLFACTORY_MAX_WAIT_MS", "soon", "MLFACTORY_MAX_WAIT_MS: 'soon' is not a number"),
        ("MLFACTORY_MAX_WAIT_MS", "5000", "MLFACTORY_MAX_WAIT_MS: 5000.0 must be 0 to 1000"),
        ("MLFACTORY_WORKERS", "0", "MLFACTORY_WORKERS: 0 must be >= 1"),
        ("MLFACTORY_ADMIN_TOKEN", "short", "MLFACTORY_ADMIN_TOKEN: use a token of at least 8"),
        ("MLFACTORY_MONITOR_TOKEN", "short", "MLFACTORY_MONITOR_TOKEN: use a token of at least"),
        # A header is decoded as latin-1: a token beyond ASCII could never authenticate.
        ("MLFACTORY_ADMIN_TOKEN", "mot-de-passé-42", "MLFACTORY_ADMIN_TOKEN: use printable ASCII"),
        ("MLFACTORY_MONITOR_TOKEN", "jeton→secret", "MLFACTORY_MONITOR_TOKEN: use printable ASCII"),
        ("MLFACTORY_HEADER_TIMEOUT_S", "0", r"MLFACTORY_HEADER_TIMEOUT_S: 0.0 must be 0.1 to 600"),
        ("MLFACTORY_BODY_TIMEOUT_S", "3600", r"MLFACTORY_BODY_TIMEOUT_S: 3600.0 must be 0.1 to"),
        ("MLFACTORY_KEEP_ALIVE_TIMEOUT_S", "forever", "'forever' is not a number"),
        ("MLFACTORY_MAX_HEADER_BYTES", "100", "MLFACTORY_MAX_HEADER_BYTES: 100 must be 1024 to"),
        ("MLFACTORY_MAX_CONNECTIONS", "0", "MLFACTORY_MAX_CONNECTIONS: 0 must be >= 1"),
        ("MLFACTORY_ADMIN_FAILURES_PER_MINUTE", "0", "MLFACTORY_ADMIN_FAILURES_PER_MINUTE: 0"),
        ("MLFACTORY_MONITOR_LEVEL", "0", r"MLFACTORY_MONITOR_LEVEL: 0.0 must be at least 0.001"),
        ("MLFACTORY_MONITOR_LEVEL", "1e-5", r"MONITOR_LEVEL: 1e-05 must be at least 0.001 and"),
        ("MLFACTORY_MONITOR_LEVEL", "5", r"MLFACTORY_MONITOR_LEVEL: 5.0 must be at least 0.001"),
        ("MLFACTORY_MONITOR_LEVEL", "1%", r"MLFACTORY_MONITOR_LEVEL: '1%' is not a number"),
        # A request holds at most 1,000 parts: more files could never be sent.
        ("MLFACTORY_MAX_FILES", "5000", r"MLFACTORY_MAX_FILES: 5000 must be 1 to 1000"),
        # As the reports' `last`: a window that large would not fit in memory.
        ("MLFACTORY_MONITOR_WINDOW", "1e9", "'1e9' is not an integer"),
        ("MLFACTORY_MONITOR_WINDOW", "100001", "MONITOR_WINDOW: 100001 must be 1 to 100000"),
        ("MLFACTORY_KEEP_ALIVE_TIMEOUT_S", "3601", r"TIMEOUT_S: 3601.0 must be 0.1 to 3600"),
        ("MLFACTORY_KEEP_ALIVE_TIMEOUT_S", "nan", r"TIMEOUT_S: nan must be 0.1 to 3600"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        ServingSettings.from_env({variable: value})


def test_env_name() -> None:
    assert env_name("max_files") == "MLFACTORY_MAX_FILES"


@pytest.mark.parametrize(
    ("value", "schedule"),
    [("60s", (0, 60.0)), ("1.5s", (0, 1.5)), ("1000", (1000, 0.0)), ("1_000", (1000, 0.0))],
)
def test_the_monitor_schedule_is_predictions_or_seconds(
    value: str, schedule: tuple[int, float]
) -> None:
    settings = ServingSettings.from_env({"MLFACTORY_MONITOR_EVERY": value})
    assert monitor_schedule(settings.monitor_every) == schedule
    assert monitor_schedule("0") == (0, 0.0)  # off
    assert ServingSettings().monitor_every == "60s"


@pytest.mark.parametrize("value", ["soon", "-5", "0s", "1.5", "10 min"])
def test_a_bad_monitor_schedule_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"MLFACTORY_MONITOR_EVERY: .* neither"):
        ServingSettings.from_env({"MLFACTORY_MONITOR_EVERY": value})


@pytest.mark.parametrize("value", ["0.000001s", "0.9s", "691200s", "infs", "1e400s"])
def test_a_monitor_schedule_too_often_or_never_is_refused(value: str) -> None:
    """More often than every second the check spins on a core; `inf` would never check."""
    with pytest.raises(ConfigError, match=r"MONITOR_EVERY: .*: check at most every second and"):
        ServingSettings.from_env({"MLFACTORY_MONITOR_EVERY": value})
    assert monitor_schedule("1s") == (0, 1.0) and monitor_schedule("604800s") == (0, 604800.0)


def test_log_retention_is_off_by_default_or_a_duration() -> None:
    assert retention_period(ServingSettings().log_retention) is None
    settings = ServingSettings.from_env({"MLFACTORY_LOG_RETENTION": "30d"})
    assert retention_period(settings.log_retention) == timedelta(days=30)
    assert retention_period("12h") == timedelta(hours=12)


@pytest.mark.parametrize(
    "value", ["forever", "-1d", "0d", "30", "30 days", "99999999999w", "1" + "0" * 400 + "s"]
)
def test_a_bad_log_retention_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"MLFACTORY_LOG_RETENTION: .* is not a duration"):
        ServingSettings.from_env({"MLFACTORY_LOG_RETENTION": value})


def test_the_monitoring_level_is_005_unless_set() -> None:
    assert ServingSettings().monitor_level == drift.DEFAULT_LEVEL == 0.05
    assert ServingSettings.from_env({"MLFACTORY_MONITOR_LEVEL": "0.01"}).monitor_level == 0.01


def test_a_misspelt_or_unknown_variable_is_named_at_start_up() -> None:
    """A typo would otherwise leave the setting at its default without a word."""
    environ = {
        "MLFACTORY_MAX_UPLOAD_BYTE": "2048",
        "MLFACTORY_UNRELATED": "x",
        "MLFACTORY_LOG_URL": "sqlite:///p.db",
        "MLFACTORY_TUXPAINT_DIR": "/usr/share/tuxpaint",
        "PATH": "/usr/bin",
    }
    assert unknown_variables_warning(environ) == (
        "no setting is named MLFACTORY_MAX_UPLOAD_BYTE (did you mean MLFACTORY_MAX_UPLOAD_BYTES?), "
        "MLFACTORY_UNRELATED: the variables are ignored"
    )
    assert unknown_variables_warning({"MLFACTORY_PORT": "8000"}) == (
        "no setting is named MLFACTORY_PORT: the variable is ignored"
    )
    assert unknown_variables_warning({"MLFACTORY_WORKERS": "2", "HOME": "/root"}) is None


def test_a_file_limit_above_the_request_limit_is_named_at_start_up() -> None:
    """The request limit binds first: the file limit a client reads in /v1/model is then never
    what the server accepts."""
    settings = ServingSettings(max_upload_bytes=2_000_000, max_request_bytes=1_000_000)
    assert limits_warning(settings) == (
        "MLFACTORY_MAX_UPLOAD_BYTES=2000000 is above MLFACTORY_MAX_REQUEST_BYTES=1000000: no file "
        "larger than a request (less its form overhead) can arrive; raise the request limit or "
        "lower the file limit"
    )
    assert limits_warning(ServingSettings()) is None
    assert limits_warning(ServingSettings(max_upload_bytes=10, max_request_bytes=10)) is None


def test_every_variable_the_project_names_is_known() -> None:
    """The variables the code, scripts, images and docs name are all settings or listed in
    `OTHER_VARIABLES`: none of them draws the start-up warning."""
    root = Path(__file__).parents[2]
    folders = ["src", "scripts", "docker", "deploy", "docs", ".github"]
    files = [root / "README.md"] + [p for f in folders for p in (root / f).rglob("*")]
    texts = [p.read_text(errors="replace") for p in files if p.is_file() and p.suffix != ".png"]
    # not `MLFACTORY_MAX_*`, nor the misspelling in a quoted warning ("... (did you mean")
    pattern = r"MLFACTORY_[A-Z0-9_]+(\*| \(did you mean)?"
    found = [m for text in texts for m in re.finditer(pattern, text)]
    named = {m.group(0).rstrip("_") for m in found if not m.group(1)}
    assert "MLFACTORY_LOG_URL" in named and "MLFACTORY_SKIP_APT" in named
    assert unknown_variables_warning(dict.fromkeys(named, "1")) is None, named


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", False), ("OFF", False), ("0", False), ("yes", True)]
)
def test_access_log_reads_yes_and_no(raw: str, expected: bool) -> None:
    assert ServingSettings().access_log is True
    assert ServingSettings.from_env({"MLFACTORY_ACCESS_LOG": raw}).access_log is expected


def test_a_yes_no_setting_that_is_neither_is_one_error() -> None:
    with pytest.raises(ConfigError, match="MLFACTORY_ACCESS_LOG: 'nope' is neither true nor false"):
        ServingSettings.from_env({"MLFACTORY_ACCESS_LOG": "nope"})


@pytest.mark.parametrize("raw", ["0", "601", "2.5"])
def test_shutdown_timeout_is_whole_seconds_within_bounds(raw: str) -> None:
    # below Kubernetes' 30 s grace period by default
    assert ServingSettings().shutdown_timeout_s == 20
    with pytest.raises(ConfigError, match="MLFACTORY_SHUTDOWN_TIMEOUT_S"):
        ServingSettings.from_env({"MLFACTORY_SHUTDOWN_TIMEOUT_S": raw})


def test_allowed_hosts_are_any_unless_listed_and_loopback_always() -> None:
    assert ServingSettings.from_env({}).allowed_hosts == "*"
    assert allowed_host_names("*") is None and allowed_host_names("a.example, *") is None
    listed = ServingSettings.from_env({"MLFACTORY_ALLOWED_HOSTS": " API.example.com,, *.svc ,"})
    names = allowed_host_names(listed.allowed_hosts)
    assert names == ["api.example.com", "*.svc", *LOOPBACK_HOSTS]
    assert allowed_host_names("localhost,[fd00::1],10.0.0.7") == [
        "localhost",
        "[fd00::1]",
        "10.0.0.7",
        "127.0.0.1",
        "[::1]",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://api.example.com", "'https://api.example.com' is not a host name"),
        ("api.example.com/v1", "is not a host name"),
        ("api example.com", "'api example.com' is not a host name"),
        ("api.example.com:8080", "'api.example.com:8080' has a port"),
        ("[fd00::1]:8080", "'[fd00::1]:8080' has a port"),
        ("fd00::1", "is an IPv6 address: write it in brackets"),
        ("[fd00::1", "lacks its ]"),
        ("api.*.com", "has a misplaced *"),
        ("*example.com", "has a misplaced *"),
        (" , ", "names no host"),
    ],
)
def test_a_bad_allowed_host_names_the_variable_and_the_entry(value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"^MLFACTORY_ALLOWED_HOSTS: .*{re.escape(expected)}"):
        ServingSettings.from_env({"MLFACTORY_ALLOWED_HOSTS": value})
