"""Start the prediction server (what `mlfactory serve` calls)."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mlfactory.errors import ConfigError
from mlfactory.serving.admin import load_predictor
from mlfactory.serving.app import BUNDLE_ENV
from mlfactory.serving.connections import PROTOCOL
from mlfactory.serving.input_store import InputStore
from mlfactory.serving.multiprocess_metrics import metrics_dir
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.process import check_can_listen
from mlfactory.serving.settings import (
    DECODE_WORST_BYTES,
    ServingSettings,
    env_name,
    limits_warning,
    unknown_variables_warning,
)

FACTORY = "mlfactory.serving.app:app_from_env"
# Open files a worker needs besides client sockets: the model, the log database, libraries.
FILES_BESIDE_CONNECTIONS = 64
# uvicorn's variable naming the proxies whose X-Forwarded-For / -Proto headers are believed.
TRUSTED_PROXIES_ENV = "FORWARDED_ALLOW_IPS"
# With several workers, uvicorn's parent pings each one every half second and kills one that
# has not answered in this many seconds (uvicorn's default is 5). A worker being spawned on a
# busy machine (its imports, the model's load) can take longer than 5 s to answer: killed and
# spawned again, in a loop that never serves. A hung worker is still replaced, 30 s later.
WORKER_HEALTHCHECK_S = 30
# Where a container's memory limit is read: cgroup v2's file, then cgroup v1's.
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_LIMIT_FILES = ("memory.max", "memory/memory.limit_in_bytes")
# A worker's memory besides request bodies: Python, ONNX Runtime, a small model, the batches.
WORKER_BASE_BYTES = 512 * 1024 * 1024
# cgroup v1 writes "no limit" as a huge number (2**63 rounded down to a page).
NO_LIMIT_ABOVE = 2**62


def run_server(
    bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None
) -> None:
    """Serve `bundle` over HTTP with uvicorn until interrupted.

    The bundle (its files, and that its model loads and runs on a test input), the
    `MLFACTORY_*` settings and the prediction log are checked here first, so a wrong path,
    a corrupt bundle or a wrong value is one clear error line instead of a traceback in every
    worker. Each worker process builds its app from `MLFACTORY_BUNDLE` (uvicorn's factory mode)
    and loads the model once. With several workers, the metrics live in a fresh folder that
    every worker writes (`multiprocess_metrics.metrics_dir`), so `/metrics` counts the whole
    server.

    Args:
        bundle: the bundle folder.
        host: interface to bind; keep 127.0.0.1 unless a proxy or container needs otherwise.
        port: TCP port.
        workers: worker processes, each with its own ONNX Runtime session
            (default: `MLFACTORY_WORKERS`, else 1).

    Raises:
        BundleError: the bundle is missing, incomplete or corrupt, or its model does not load
            or run.
        ConfigError: `workers` or a `MLFACTORY_*` setting is invalid, or the prediction
            log (`MLFACTORY_LOG_URL`) cannot be opened, or the input store
            (`MLFACTORY_INPUT_STORE`) cannot be written.
    """
    settings = ServingSettings.from_env()
    check_can_listen(host, port)
    workers = settings.workers if workers is None else workers
    warnings = (
        open_endpoints_warning(host, settings),
        limits_warning(settings),
        memory_limit_warning(settings, workers),
        unknown_variables_warning(),
    )
    for warning in warnings:
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    loaded = load_predictor(Path(bundle), settings).bundle
    if workers < 1:
        raise ConfigError(f"--workers: {workers} must be >= 1")
    check_file_limit(settings.max_connections)
    PredictionLog(settings.log_url).close()  # creates the table once, before any worker starts
    if settings.input_store:
        InputStore.open(settings.input_store)  # a folder it cannot write to: one line, now
    os.environ[BUNDLE_ENV] = str(loaded.path.resolve())

    import uvicorn

    with metrics_dir(workers):  # before the workers start: they import prometheus-client
        uvicorn.run(
            FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=PROTOCOL,
            log_config=log_config(),
            access_log=settings.access_log,
            # Past it, requests still in flight (a client trickling its body) are cancelled,
            # so the server exits before the platform's grace period ends in a SIGKILL.
            timeout_graceful_shutdown=settings.shutdown_timeout_s,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            # X-Forwarded-For names the client only behind a proxy the operator names in
            # uvicorn's FORWARDED_ALLOW_IPS; else anyone could fake the address that the
            # failed-token lockout counts and the log shows (uvicorn trusts 127.0.0.1's).
            proxy_headers=TRUSTED_PROXIES_ENV in os.environ,
        )


def open_endpoints_warning(host: str, settings: ServingSettings) -> str | None:
    """The start-up warning of a server bound beyond this machine whose drift reports and
    feedback need no token (`MLFACTORY_MONITOR_TOKEN` unset); None otherwise."""
    if settings.monitor_token is not None or _loopback(host):
        return None
    return (
        f"--host {host}: anyone who can reach the server reads its drift reports (other "
        "clients' request ids and labels) and sends feedback; set MLFACTORY_MONITOR_TOKEN "
        "to guard them"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def log_config() -> dict[str, Any]:
    """uvicorn's logging set-up, with mlfactory's own loggers shown beside uvicorn's at INFO."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["mlfactory"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config.setdefault("filters", {})["cancelled"] = {"()": f"{__name__}.CancelledRequestFilter"}
    config["handlers"]["default"].setdefault("filters", []).append("cancelled")
    return config


class CancelledRequestFilter(logging.Filter):
    """Drops the traceback uvicorn logs for each request it cancels at the end of a shutdown:
    its own line before them ("Cancel 2 running task(s), timeout graceful shutdown exceeded")
    already says what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


def check_file_limit(max_connections: int) -> None:
    """Make room for `max_connections` sockets under the open-files limit (`ulimit -n`).

    The soft limit is raised up to the hard one when needed. Without this, a flood of idle
    connections would exhaust file descriptors before the connection limit is reached.

    Raises:
        ConfigError: even the hard limit is too low for the setting.
    """
    try:
        import resource
    except ImportError:  # not a Unix system: no such limit to check
        return
    needed = max_connections + FILES_BESIDE_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    allowed = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))
    if allowed < needed:
        raise ConfigError(
            f"{env_name('max_connections')}: {max_connections} connections need {needed} open "
            f"files, but the limit (ulimit -n) is {allowed}: lower the setting or raise the limit"
        )


def memory_limit_warning(
    settings: ServingSettings, workers: int, cgroup_root: Path = CGROUP_ROOT
) -> str | None:
    """The start-up warning of a container memory limit that full request bodies can exceed.

    Each worker holds a request's body in memory while it arrives, so at worst it holds
    `MLFACTORY_MAX_CONNECTIONS` bodies of `MLFACTORY_MAX_REQUEST_BYTES`, and
    `MLFACTORY_MAX_CONCURRENT_DECODES` decoded images (`DECODE_WORST_BYTES` each), besides its
    base (`WORKER_BASE_BYTES`). A limit below that lets a burst of large uploads get the container
    killed for memory (docs/deployment.md, "Memory"). None when there is no limit, or it fits.

    Args:
        settings: the server's settings.
        workers: worker processes.
        cgroup_root: where the cgroup file system is mounted.
    """
    limit = cgroup_memory_limit(cgroup_root)
    if limit is None:
        return None
    bodies = settings.max_connections * settings.max_request_bytes
    decodes = settings.max_concurrent_decodes * DECODE_WORST_BYTES
    needed = workers * (WORKER_BASE_BYTES + bodies + decodes)
    if needed <= limit:
        return None
    mib = 1024 * 1024
    return (
        f"the memory limit ({limit // mib} MiB) is below what {workers} worker(s) may hold: "
        f"{env_name('max_connections')}={settings.max_connections} request bodies of "
        f"{env_name('max_request_bytes')}={settings.max_request_bytes} each, "
        f"{env_name('max_concurrent_decodes')}={settings.max_concurrent_decodes} image "
        f"decodes of up to {DECODE_WORST_BYTES // mib} MiB, plus {WORKER_BASE_BYTES // mib} "
        f"MiB, is {needed // mib} MiB; lower a setting or raise the limit, else a burst of large "
        "uploads gets the server killed"
    )


def cgroup_memory_limit(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """This container's memory limit in bytes (cgroup v2, else v1); None when it has none or
    none can be read."""
    for name in CGROUP_LIMIT_FILES:
        try:
            text = (cgroup_root / name).read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= NO_LIMIT_ABOVE:
            return None
        return int(text)
    return None
