"""numpy's BLAS on one thread for monitoring's matrix products.

The products here are small (a window against a 64-column basis, a 1,000-row kernel) and run
beside ONNX Runtime's own threads in the server. With OpenBLAS's default of one thread per core
they wait on busy cores: measured on 2 busy cores, scoring 50 embeddings took 21 ms with two BLAS
threads and 1.2 ms with one, and a whole drift check 236 ms against 33 ms.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def one_thread() -> AbstractContextManager[Any]:
    """A context in which numpy's BLAS uses one thread (cheap: the libraries are found once)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
