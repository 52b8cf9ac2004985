"""A real `mlfactory serve` process on 127.0.0.1, for the tests that need one over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlfactory.serving.process import ServerProcess, ServerStartError, free_port
from mlfactory.serving.process import start_server as start_process

LiveServer = ServerProcess
__all__ = ["LiveServer", "free_port", "live_server", "server_env", "start_server"]


def server_env(**settings: str) -> dict[str, str]:
    """This environment without any `MLFACTORY_*` variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFACTORY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({f"MLFACTORY_{name.upper()}": value for name, value in settings.items()})
    return env


def start_server(bundle: Path, workdir: Path, *args: str, **settings: str) -> LiveServer:
    """Start `mlfactory serve` on a free port and wait until `/health` answers (or fail).

    Args:
        bundle: the bundle to serve.
        workdir: the server's working directory; its output goes to `server-*.log` there.
        args: more `mlfactory serve` options, e.g. `"--workers", "2"`.
        settings: `ServingSettings` fields, passed as `MLFACTORY_*` variables.
    """
    output = workdir / f"server-{free_port()}.log"
    try:
        return start_process(bundle, output, server_env(**settings), args, cwd=workdir)
    except ServerStartError as exc:
        pytest.fail(str(exc))


@contextmanager
def live_server(bundle: Path, workdir: Path, *args: str, **settings: str) -> Iterator[LiveServer]:
    """`start_server`, stopped on exit whatever happens."""
    server = start_server(bundle, workdir, *args, **settings)
    try:
        yield server
    finally:
        server.stop()
