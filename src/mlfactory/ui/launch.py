"""Start the web UI: `streamlit run` on `mlfactory/ui/app.py`, in its own process."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from mlfactory.errors import ConfigError
from mlfactory.serving.process import HOST, ServerProcess, check_can_listen, free_port

APP_SCRIPT = Path(__file__).with_name("app.py")
API_ENV = "MLFACTORY_UI_API"
HEALTH_PATH = "/_stcore/health"
EXAMPLE_API = "http://127.0.0.1:8000"
# What stops `mlfactory ui` stops its Streamlit child too.
FORWARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)


def ui_command(host: str, port: int) -> list[str]:
    """The `streamlit run` command line of the app (headless, no usage statistics)."""
    return [
        sys.executable,
        *("-m", "streamlit", "run", str(APP_SCRIPT)),
        *("--server.address", host, "--server.port", str(port)),
        *("--server.headless", "true", "--browser.gatherUsageStats", "false"),
        *("--server.fileWatcherType", "none", "--global.developmentMode", "false"),
        *("--client.toolbarMode", "viewer"),
    ]


def ui_environment(api: str) -> dict[str, str]:
    """This environment plus the API's address for the app.

    Raises:
        ConfigError: `api` is not the base URL of a server (see `check_api_url`), or the `ui`
            extra is not installed.
    """
    check_api_url(api)
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the web UI needs the ui extra: pip install 'mlfactory[ui]'")
    return {**os.environ, API_ENV: api.rstrip("/"), "PYTHONUNBUFFERED": "1"}


def check_api_url(api: str) -> None:
    """Refuse an `--api` the UI could not call: an http(s) URL with a host, a port from 1 to
    65535 if any, and a path at most (a server behind a proxy), no query or fragment.

    Raises:
        ConfigError: what is wrong with it, in one line.
    """
    option = f"--api {api!r}"
    try:
        parts = urlsplit(api)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise ConfigError(f"{option} is not a valid URL ({exc}), e.g. {EXAMPLE_API}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{option} is not an http(s) URL, e.g. {EXAMPLE_API}")
    if not parts.hostname or any(c.isspace() for c in parts.hostname):
        raise ConfigError(f"{option} names no host, e.g. {EXAMPLE_API}")
    if port == 0:
        raise ConfigError(f"{option}: the port must be 1 to 65535")
    if "?" in api or "#" in api:
        raise ConfigError(
            f"{option} has a query or fragment: give the server's base URL, e.g. {EXAMPLE_API}"
        )
    try:
        httpx.URL(api)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{option} is not a valid URL ({exc}), e.g. {EXAMPLE_API}") from None


def run_ui(api: str, host: str = HOST, port: int = 8501) -> int:
    """Run the UI in a child process until it exits; returns its exit code (128 + N when
    signal N ended it). SIGTERM, SIGINT and SIGHUP are passed on to it, and the UI waits for
    it to stop: stopping `mlfactory ui` stops Streamlit.

    Raises:
        ConfigError: see `ui_environment`, and an address it cannot listen on.
        KeyboardInterrupt: after Ctrl-C (SIGINT), once Streamlit has stopped.
    """
    env = ui_environment(api)
    check_can_listen(host, port)
    print(f"mlfactory ui on http://{host}:{port} (API {env[API_ENV]})", flush=True)
    child = subprocess.Popen(ui_command(host, port), env=env)
    with forwarded_signals(child) as received:
        code = child.wait()
    if signal.SIGINT in received:
        raise KeyboardInterrupt
    return 128 - code if code < 0 else code


@contextmanager
def forwarded_signals(child: subprocess.Popen[bytes]) -> Iterator[list[int]]:
    """Pass SIGTERM, SIGINT and SIGHUP on to `child` while the block runs (in the main
    thread; elsewhere signals reach Python's handlers only there); yields the signals
    received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def start_ui(api: str, output: Path, timeout_s: float = 60.0) -> ServerProcess:
    """Start the UI on a free port of 127.0.0.1 and wait until Streamlit answers.

    Raises:
        ConfigError: see `ui_environment`.
        ServerStartError: the UI exited or did not answer within `timeout_s`.
    """
    env, port = ui_environment(api), free_port()
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ui_command(HOST, port), stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    ui = ServerProcess(f"http://{HOST}:{port}", process, output, health_path=HEALTH_PATH)
    try:
        ui.wait_healthy(timeout_s)
    except BaseException:
        ui.stop()
        raise
    return ui
