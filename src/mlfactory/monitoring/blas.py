"""numpy's BLAS on one thread for monitoring's matrix products.

The products here are small (a window against a 64-column basis, a 1,000-row kernel) and run
beside ONNX Runtime's own threads in the server. With OpenBLAS's default of one thread per core
they wait on busy cores: measured on 2 busy cores, scoring 50 embeddings took 21 ms with two BLAS
threads and 1.2 ms with one, and a whole drift check 236 ms against 33 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ParamSpec, TypeVar

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None
_pinned = False
P = ParamSpec("P")
R = TypeVar("R")


def one_thread() -> AbstractContextManager[Any]:
    """A context in which numpy's BLAS uses one thread (cheap: the libraries are found once)."""
    global _controller
    if _pinned:
        return nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def on_one_thread(func: Callable[P, R]) -> Callable[P, R]:
    """`func` run with numpy's BLAS on one thread, whatever the process set before.

    A float32 product's last bits depend on how many threads OpenBLAS splits it over: a profile
    built where a server had pinned one thread differed by an ulp from one built elsewhere.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with one_thread():
            return func(*args, **kwargs)

    return wrapper


def pin_one_thread() -> None:
    """Keep numpy's BLAS on one thread for the rest of the process (the server does this).

    Entering and leaving `one_thread` costs about 0.2 ms, as much as scoring a request's
    inputs; a server, whose numpy products are all small, pins once and skips it after.
    """
    global _controller, _pinned
    if _controller is None:
        _controller = ThreadpoolController()
    _controller.limit(limits=1, user_api="blas")  # not used as a context: it stays
    _pinned = True
