"""`mlfactory serve` as a child process on 127.0.0.1: start it, wait for `/health`, stop it.

The demo, the tests that need a real server and the benchmarks all start servers this way.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlfactory.errors import ConfigError, MlfactoryError

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# How often a server is started on another port when the chosen one was taken meanwhile.
PORT_TRIES = 3


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nobody listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def check_can_listen(host: str, port: int) -> None:
    """Bind `host:port` as uvicorn (and Streamlit) will, and let go: a port another server
    holds, or an address that is not this machine's, is one line before the model loads
    (uvicorn would log it and exit with code 3 after start-up). A server that takes the port
    in between still meets the server's own error.

    Raises:
        ConfigError: the port is not one (0 to 65535), or the address cannot be listened on.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port} is not a TCP port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn's bind_socket
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                reason += ": another server is listening there; choose another --port"
            raise ConfigError(f"--host {host} --port {port}: cannot listen: {reason}") from None


class ServerStartError(MlfactoryError):
    """The server exited, or did not answer `/health`, while starting."""


@dataclass
class ServerProcess:
    """A running `mlfactory serve` (or `mlfactory ui`): its URL, process and output file."""

    url: str
    process: subprocess.Popen[bytes]
    output: Path
    health_path: str = "/health"

    def output_tail(self, lines: int = 30) -> str:
        """The last lines the server printed."""
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Block until `GET <health_path>` answers 200.

        Raises:
            ServerStartError: the process exited or did not answer within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"the server exited with code {self.process.returncode}; see {self.output}:"
                    f"\n{self.output_tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"{self.url}{self.health_path}", timeout=2.0
                ) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.kill()
        raise ServerStartError(
            f"the server did not answer within {timeout_s:.0f} s; see {self.output}:"
            f"\n{self.output_tail()}"
        )

    def port_was_taken(self) -> bool:
        """Whether the server exited because another process listens on its port."""
        return self.process.poll() is not None and "address already in use" in (
            self.output_tail().lower()
        )

    def kill(self) -> None:
        """`kill -9`: no shutdown hook, no flush, nothing runs after it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), killing the process if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


def start_server(
    bundle: Path,
    output: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    cwd: Path | None = None,
    timeout_s: float = STARTUP_TIMEOUT_S,
    ports: Iterator[int] | None = None,
) -> ServerProcess:
    """Start `mlfactory serve BUNDLE` on a free port of 127.0.0.1 and wait until it is healthy.
    A port that another process takes between the choice and the server's bind is not fatal:
    the server is started again on another, PORT_TRIES times in all.

    Args:
        bundle: the bundle to serve.
        output: file that receives the server's stdout and stderr.
        env: the server's environment (default: this process's).
        args: more `mlfactory serve` options, e.g. `["--workers", "2"]`.
        cwd: the server's working directory (where a relative prediction log lands).
        timeout_s: how long to wait for `/health`.
        ports: the ports to try, in order (default: a port free at that moment, each try).

    Raises:
        ServerStartError: the server exited or did not become healthy in time.
    """
    candidates = ports if ports is not None else iter(free_port, -1)
    for attempt in range(1, PORT_TRIES + 1):
        server = _launch(bundle, next(candidates), output, env, args, cwd)
        try:
            server.wait_healthy(timeout_s)
            return server
        except ServerStartError:
            server.stop()
            if attempt == PORT_TRIES or not server.port_was_taken():
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable: the last try returns or raises")


def _launch(
    bundle: Path,
    port: int,
    output: Path,
    env: Mapping[str, str] | None,
    args: Sequence[str],
    cwd: Path | None,
) -> ServerProcess:
    command = [sys.executable, "-m", "mlfactory.cli", "serve", str(bundle)]
    command += ["--host", HOST, "--port", str(port), *args]
    environment = dict(os.environ if env is None else env)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=environment, cwd=cwd
        )
    return ServerProcess(f"http://{HOST}:{port}", process, output)


@contextmanager
def running_server(
    bundle: Path,
    output: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    cwd: Path | None = None,
) -> Iterator[ServerProcess]:
    """`start_server`, stopped on exit whatever happens."""
    server = start_server(bundle, output, env, args, cwd)
    try:
        yield server
    finally:
        server.stop()
