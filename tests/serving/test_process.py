"""`serving.process`: a server started on a port that another process took meanwhile is started
again on another one; a server that fails for any other reason is not."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from mlfactory.serving.process import HOST, ServerStartError, free_port, start_server


def test_a_port_taken_meanwhile_is_tried_again_on_another(
    image_bundle: Path, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((HOST, 0))
        busy.listen()
        taken = busy.getsockname()[1]
        server = start_server(
            image_bundle, tmp_path / "server.log", ports=iter([taken, free_port()])
        )
        try:
            assert server.url != f"http://{HOST}:{taken}"
            with urllib.request.urlopen(f"{server.url}/health", timeout=10) as answer:
                assert answer.status == 200
        finally:
            server.stop()


def test_a_server_that_fails_otherwise_is_not_started_again(tmp_path: Path) -> None:
    ports = iter([free_port(), free_port(), free_port()])
    with pytest.raises(ServerStartError, match="exited with code"):
        start_server(tmp_path / "no-bundle", tmp_path / "server.log", ports=ports)
    assert len(list(ports)) == 2  # one try: the other ports were never taken
