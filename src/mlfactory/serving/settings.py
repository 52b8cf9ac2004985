"""Serving settings: typed, with defaults, read from `MLFACTORY_*` environment variables.

Environment variables are the one way to configure a running server (and the only place secrets
may come from), so the same settings reach every uvicorn worker process.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from mlfactory.durations import HOW_TO_WRITE, parse_duration
from mlfactory.errors import ConfigError

ENV_PREFIX = "MLFACTORY_"
# The `MLFACTORY_*` variables that are no serving setting: read by the CLI's other commands, the
# UI and the set-up and test scripts (tests/serving/test_settings.py checks the sources).
OTHER_VARIABLES = frozenset(
    ENV_PREFIX + name
    for name in (
        "BUNDLE",  # the bundle a server's workers load (set by `mlfactory serve`)
        "MAX_DOWNLOAD_BYTES",
        "ORANGE_WHEEL",
        "SONIC_PI_DIR",
        "TUXPAINT_DIR",
        "SWEEP_STORAGE",
        "UI_API",
        "CHROMIUM",  # the browser tests
        "CHROMEDRIVER",
        "FORCE_INSTALL",  # scripts/setup.sh
        "SETUP_FOR",  # scripts/setup.sh: what to set up for (demo)
        "SKIP_APT",
    )
)
MEGABYTE = 1024 * 1024
# The most memory one request's decoding may take: a 40-megapixel RGBA PNG (the pixel limit)
# through the `mushrooms` encoder, measured (docs/serving.md, "Memory per image").
DECODE_WORST_BYTES = 343 * MEGABYTE
DEFAULT_LOG_URL = "sqlite:///predictions.db"
# A gathering window longer than this is a configuration mistake, not a throughput setting.
MAX_WAIT_LIMIT_MS = 1000.0
# Connection timeouts are seconds: anything longer lets idle or slow clients pile up.
MAX_TIMEOUT_S = 600.0
# Keep-alive may be longer: a load balancer in front reuses its connections for up to 600 s
# (Google's), and the server must keep them open longer than that (docs/deployment.md).
MAX_KEEP_ALIVE_S = 3600.0
# One part per file: a request holds at most this many parts (uploads.MAX_PARTS).
MAX_FILES_LIMIT = 1000
# The most predictions one window reads (the reports' `last`, `monitor --last`, the background
# check): about 0.5 GB of float32 embeddings at 1,280 wide, and seconds of checks.
MAX_WINDOW_ROWS = 100_000
# The background check by time: more often than every second reads the window again and again
# for little news; more than a week apart is as good as off (say 0 then).
MONITOR_SECONDS = (1.0, 7 * 24 * 3600.0)
# The strictest drift level the server checks at: a stricter one draws more permutations
# (up to 20,000 a check, 9 times the 2,199 of level 0.01; docs/benchmarks.md, "The verdict at a
# strict level"), and a history request checks up to 100 buckets.
MIN_MONITOR_LEVEL = 0.001
# Host names `MLFACTORY_ALLOWED_HOSTS` always allows: the server's own machine.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

# Each number's bounds (inclusive) and how its error says them.
BOUNDS: dict[str, tuple[float, float, str]] = {
    **{
        name: (1, math.inf, "must be >= 1")
        for name in (
            "max_upload_bytes",
            "max_text_chars",
            "max_request_bytes",
            "max_batch_size",
            "workers",
            "max_connections",
            "admin_failures_per_minute",
            "max_concurrent_decodes",
        )
    },
    "max_files": (1, MAX_FILES_LIMIT, f"must be 1 to {MAX_FILES_LIMIT}"),
    "monitor_window": (1, MAX_WINDOW_ROWS, f"must be 1 to {MAX_WINDOW_ROWS}"),
    "header_timeout_s": (0.1, MAX_TIMEOUT_S, f"must be 0.1 to {MAX_TIMEOUT_S:g} (seconds)"),
    "body_timeout_s": (0.1, MAX_TIMEOUT_S, f"must be 0.1 to {MAX_TIMEOUT_S:g} (seconds)"),
    "body_deadline_s": (0.1, MAX_TIMEOUT_S, f"must be 0.1 to {MAX_TIMEOUT_S:g} (seconds)"),
    "keep_alive_timeout_s": (
        0.1,
        MAX_KEEP_ALIVE_S,
        f"must be 0.1 to {MAX_KEEP_ALIVE_S:g} (seconds)",
    ),
    "max_header_bytes": (1024, MEGABYTE, f"must be 1024 to {MEGABYTE}"),
    "ort_intra_op_threads": (0, math.inf, "must be >= 0"),
    "ort_inter_op_threads": (0, math.inf, "must be >= 0"),
    "max_wait_ms": (0, MAX_WAIT_LIMIT_MS, f"must be 0 to {MAX_WAIT_LIMIT_MS:g}"),
    "shutdown_timeout_s": (1, MAX_TIMEOUT_S, f"must be 1 to {MAX_TIMEOUT_S:g} (seconds)"),
}
# How a yes/no setting may be written (`MLFACTORY_ACCESS_LOG=false`).
BOOLEANS = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}


@dataclass(frozen=True)
class ServingSettings:
    """Limits and runtime options of the prediction server.

    Each field is read from the environment variable `MLFACTORY_<FIELD NAME IN CAPITALS>`,
    e.g. `MLFACTORY_MAX_UPLOAD_BYTES=5242880`, `MLFACTORY_LOG_URL=postgresql+psycopg://...`,
    `MLFACTORY_ADMIN_TOKEN=...`.

    Attributes:
        max_upload_bytes: largest accepted file, in bytes; enforced while the upload streams in.
        max_files: most files (or texts) in one request.
        max_text_chars: longest accepted text, in characters (text bundles).
        max_request_bytes: largest accepted request body, in bytes (files plus overhead).
        ort_intra_op_threads: ONNX Runtime threads inside one operator, per worker process;
            0 lets ONNX Runtime choose (one per physical core).
        ort_inter_op_threads: ONNX Runtime threads running independent operators in parallel;
            0 lets ONNX Runtime choose.
        max_batch_size: most inputs the model runs in one call. Inputs that queue while the
            model is busy are run together, up to this many (one request is never split).
        max_wait_ms: how long the batcher may hold a batch open for more inputs once the model
            is free. 0 (the default) never waits: a lone request runs at once, and batches only
            form from what queued up while the model was busy.
        workers: uvicorn worker processes for `mlfactory serve` when `--workers` is not given;
            each loads its own model, so more than one only pays with spare cores.
        log_url: SQLAlchemy URL of the prediction log, e.g. `sqlite:///predictions.db`
            (relative to the working directory; the default) or a `postgresql+psycopg://` URL.
        admin_token: bearer token of `POST /v1/admin/reload`; unset disables the admin API.
            Both tokens: at least 8 characters, printable ASCII (what a header can carry).
        monitor_token: bearer token of the monitoring reports (`GET /v1/monitoring/drift`,
            `/history`) and of `POST /v1/feedback`; unset leaves them open (a laptop). The
            reports name other clients' requests and labels, and feedback sets the live
            accuracy: a server that others can reach sets it.
        keep_alive_timeout_s: an idle keep-alive connection is closed after this long.
        header_timeout_s: a connection must send a whole request head (request line and
            headers) within this long of opening or of its first byte; else 408 and closed.
        body_timeout_s: the longest wait for the next part of a request body; else 408.
        body_deadline_s: the longest a whole request body may take to arrive, from the end of
            its head; else 408. A client trickling a byte now and then holds a connection this
            long at most.
        max_header_bytes: largest request head (request line and headers); else 431.
        max_connections: most open connections per worker process. One more closes the
            connection idle the longest, or is refused (503) when none is idle. A `GET` or
            `HEAD /health` is let in even then, on one connection past the limit, so probes
            answer while every connection is busy.
        max_concurrent_decodes: most requests of one worker process decoding and
            preprocessing their inputs at once; the others wait their turn. A decoded image
            may take up to 343 MiB (a 40-megapixel RGBA PNG), so this bounds that memory.
        admin_failures_per_minute: failed authentications (admin or monitoring token)
            allowed per client address and minute; beyond it the guarded endpoints answer 429
            to that address for a minute.
        monitor_every: how often the background drift check runs: seconds with an `s` (`60s`,
            the default), or a number of predictions and feedback labels (`1000`); `0` turns
            it off. It updates the monitoring gauges of `/metrics`; bundles without a profile
            are never checked. A check of 1,000 predictions costs a fraction of a CPU second, so
            at hundreds of requests a second a count-based trigger costs throughput; a minute
            does not.
        monitor_window: the latest predictions each background check reads.
        monitor_level: the false-alarm level of the background check's verdict, and the
            default of the report endpoints' `level`: checks that run often want a stricter one
            than 0.05 (each check may alarm falsely).
        log_retention: how long the prediction log keeps a prediction (`30d`, `12h`, `2w`):
            older rows, and feedback labels stored longer ago, are deleted in the background.
            `0` (the default) keeps everything.
        input_store: a folder where every predicted input is kept as it arrived, named by its
            SHA-256 (the log row's `input_sha256`), to retrain on (`input_store`); empty (the
            default) keeps none. The log's retention applies to it too.
        shutdown_timeout_s: on SIGTERM (or Ctrl-C) the server stops accepting connections and
            waits this long, in whole seconds, for the requests in flight; then it cancels them
            and exits. Keep it below the platform's grace period (Kubernetes'
            `terminationGracePeriodSeconds`, 30 s by default), or a slow client gets the
            server killed without its shutdown.
        access_log: one INFO line per request (client, method, path, status), as uvicorn logs
            them; `false` turns them off (the prediction log and `/metrics` still count
            every request).
        allowed_hosts: the host names (or addresses) the server answers to, comma-separated
            (`mlfactory.example.com,*.svc.cluster.local,10.0.0.7`); a request whose `Host`
            header names another is refused (400). `*` (the default) allows any. Loopback
            (`localhost`, `127.0.0.1`, `[::1]`) is always allowed: the image's health check
            calls it, and no web page can make a browser send it (see `allowed_host_names`).
    """

    max_upload_bytes: int = 10 * MEGABYTE
    max_files: int = 64
    max_text_chars: int = 10_000
    max_request_bytes: int = 100 * MEGABYTE
    ort_intra_op_threads: int = 0
    ort_inter_op_threads: int = 0
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    workers: int = 1
    log_url: str = DEFAULT_LOG_URL
    admin_token: str | None = field(default=None, repr=False)  # a secret: never printed
    monitor_token: str | None = field(default=None, repr=False)  # a secret too
    keep_alive_timeout_s: float = 5.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 15.0
    body_deadline_s: float = 60.0
    max_header_bytes: int = 32 * 1024
    max_connections: int = 512
    max_concurrent_decodes: int = 4
    admin_failures_per_minute: int = 10
    monitor_every: str = "60s"
    monitor_window: int = 1000
    # monitoring.drift.DEFAULT_LEVEL, not imported: that module brings scipy with it.
    monitor_level: float = 0.05
    log_retention: str = "0"
    input_store: str = ""
    shutdown_timeout_s: int = 20
    access_log: bool = True
    allowed_hosts: str = "*"

    def __post_init__(self) -> None:
        for name, (low, high, requirement) in BOUNDS.items():
            value = getattr(self, name)
            _check(name, value, low <= value <= high, requirement)
        level = self.monitor_level
        requirement = f"must be at least {MIN_MONITOR_LEVEL:g} and below 1, e.g. 0.01"
        _check("monitor_level", level, MIN_MONITOR_LEVEL <= level < 1, requirement)
        monitor_schedule(self.monitor_every)  # raises ConfigError when malformed
        allowed_host_names(self.allowed_hosts)  # the same
        retention_period(self.log_retention)  # the same
        if not self.log_url.strip():
            raise ConfigError(f"{env_name('log_url')}: must not be empty (an SQLAlchemy URL)")
        for name in ("admin_token", "monitor_token"):
            token = getattr(self, name)
            if token is not None and len(token.strip()) < 8:
                raise ConfigError(f"{env_name(name)}: use a token of at least 8 characters")
            if token is not None and not (token.isascii() and token.isprintable()):
                # An HTTP header carries ASCII: a client could never send such a token.
                raise ConfigError(
                    f"{env_name(name)}: use printable ASCII characters only (letters, digits, "
                    "punctuation): an Authorization header cannot carry others"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Settings from environment variables; unset or empty variables keep their defaults.

        Args:
            environ: the variables to read (default: `os.environ`).

        Raises:
            ConfigError: a variable is set to something that is not a valid value.
        """
        source = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = source.get(env_name(spec.name))
            if raw is None or not raw.strip():
                continue
            values[spec.name] = _parse(spec.name, str(spec.type), raw.strip())
        return cls(**values)


def monitor_schedule(every: str) -> tuple[int, float]:
    """`monitor_every` as (predictions, seconds); 0 where that trigger is off.

    Raises:
        ConfigError: not a whole number of predictions, or seconds ending in `s`; or seconds
            outside `MONITOR_SECONDS`.
    """
    text = every.strip().lower()
    try:
        if text.endswith("s"):
            seconds = float(text[:-1])
            low, high = MONITOR_SECONDS
            if low <= seconds <= high:
                return 0, seconds
            if seconds > 0:  # inf too
                raise ConfigError(
                    f"{env_name('monitor_every')}: '{every}': check at most every second and at "
                    f"least once a week ({low:g}s to {high:g}s), or give 0 to turn it off"
                )
        elif int(text) >= 0:
            return int(text), 0.0
    except ValueError:
        pass
    raise ConfigError(
        f"{env_name('monitor_every')}: '{every}' is neither a number of predictions (1000), "
        "seconds (60s) nor 0 (off)"
    )


def allowed_host_names(allowed_hosts: str) -> list[str] | None:
    """`allowed_hosts` as the list Starlette's `TrustedHostMiddleware` matches `Host` headers
    against, loopback names added; None when any host is allowed (`*`).

    Raises:
        ConfigError: an entry is a URL, has a port, holds a space or a misplaced `*`, or no
            entry names a host.
    """
    names = [name.strip().lower() for name in allowed_hosts.split(",") if name.strip()]
    if "*" in names:
        return None
    for name in names:
        problem = _host_pattern_problem(name)
        if problem:
            raise ConfigError(f"{env_name('allowed_hosts')}: '{name}' {problem}")
    if not names:
        raise ConfigError(
            f"{env_name('allowed_hosts')}: '{allowed_hosts}' names no host: list host names, "
            "comma-separated, or * to allow any"
        )
    return [*names, *(host for host in LOOPBACK_HOSTS if host not in names)]


def _host_pattern_problem(name: str) -> str | None:
    if "/" in name or any(char.isspace() for char in name):
        return "is not a host name: give the name alone, as in mlfactory.example.com"
    if "*" in name[1:] or (name.startswith("*") and not name.startswith("*.")):
        return "has a misplaced *: only a leading *. is a wildcard, as in *.example.com"
    if name.startswith("["):  # an IPv6 address, as a Host header writes it
        if name.endswith("]"):
            return None
        return "has a port: list the address without it" if "]:" in name else "lacks its ]"
    if name.count(":") > 1:
        return "is an IPv6 address: write it in brackets, as a Host header does: [fd00::1]"
    if ":" in name:
        return "has a port: list the host without it"
    return None


def retention_period(retention: str) -> timedelta | None:
    """`log_retention` as a duration; None when rows are kept for ever (`0`).

    Raises:
        ConfigError: neither 0 nor a duration.
    """
    if retention.strip() == "0":
        return None
    period = parse_duration(retention)
    if period is None:
        raise ConfigError(
            f"{env_name('log_retention')}: '{retention}' is not a duration: {HOW_TO_WRITE}; "
            "or 0 to keep every prediction"
        )
    return period


def _parse(name: str, kind: str, raw: str) -> Any:
    if kind == "bool":
        if raw.lower() not in BOOLEANS:
            raise ConfigError(f"{env_name(name)}: '{raw}' is neither true nor false")
        return BOOLEANS[raw.lower()]
    if kind not in ("int", "float"):
        return raw
    try:
        return int(raw.replace("_", "")) if kind == "int" else float(raw.replace("_", ""))
    except ValueError:
        article = "an integer" if kind == "int" else "a number"
        raise ConfigError(f"{env_name(name)}: '{raw}' is not {article}") from None


def _check(name: str, value: object, ok: bool, requirement: str) -> None:
    if not ok:
        raise ConfigError(f"{env_name(name)}: {value} {requirement}")


def unknown_variables_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """The start-up warning for `MLFACTORY_*` variables that nothing reads (a misspelt setting
    is otherwise silently the default: `MAX_UPLOAD_BYTE` for `MAX_UPLOAD_BYTES`), with the closest
    known name; None when there is none."""
    source = os.environ if environ is None else environ
    known = sorted({env_name(spec.name) for spec in fields(ServingSettings)} | OTHER_VARIABLES)
    unknown = sorted(name for name in source if name.startswith(ENV_PREFIX) and name not in known)
    if not unknown:
        return None
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        named.append(f"{name} (did you mean {close[0]}?)" if close else name)
    ignored = "the variables are ignored" if len(named) > 1 else "the variable is ignored"
    return f"no setting is named {', '.join(named)}: {ignored}"


def limits_warning(settings: ServingSettings) -> str | None:
    """The start-up warning of a file limit that the request limit overrides (a file arrives in
    a request, so it can never be larger than one); None when the two agree."""
    if settings.max_upload_bytes <= settings.max_request_bytes:
        return None
    return (
        f"{env_name('max_upload_bytes')}={settings.max_upload_bytes} is above "
        f"{env_name('max_request_bytes')}={settings.max_request_bytes}: no file larger than a "
        "request (less its form overhead) can arrive; raise the request limit or lower the "
        "file limit"
    )


def env_name(field_name: str) -> str:
    """The environment variable that sets a `ServingSettings` field."""
    return ENV_PREFIX + field_name.upper()
