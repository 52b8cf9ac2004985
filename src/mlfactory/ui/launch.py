"""Start the web UI: `streamlit run` on `mlfactory/ui/app.py`, in its own process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mlfactory.errors import ConfigError
from mlfactory.serving.process import HOST, ServerProcess, check_can_listen, free_port

APP_SCRIPT = Path(__file__).with_name("app.py")
API_ENV = "MLFACTORY_UI_API"
HEALTH_PATH = "/_stcore/health"


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
        ConfigError: `api` is not an http(s) URL, or the `ui` extra is not installed.
    """
    parts = urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--api {api!r} is not an http(s) URL, e.g. http://127.0.0.1:8000")
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the web UI needs the ui extra: pip install 'mlfactory[ui]'")
    return {**os.environ, API_ENV: api.rstrip("/"), "PYTHONUNBUFFERED": "1"}


def run_ui(api: str, host: str = HOST, port: int = 8501) -> int:
    """Run the UI in a child process until it exits (or Ctrl-C); returns its exit code.

    Raises:
        ConfigError: see `ui_environment`, and an address it cannot listen on.
    """
    env = ui_environment(api)
    check_can_listen(host, port)
    print(f"mlfactory ui on http://{host}:{port} (API {env[API_ENV]})", flush=True)
    return subprocess.call(ui_command(host, port), env=env)


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
