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


def _limit_to_one() -> Any:
    """Limit numpy's BLAS to one thread; the returned limiter, used as a context, restores the
    limits that were set before (cheap: the libraries are found once)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def one_thread() -> AbstractContextManager[Any]:
    """A context in which numpy's BLAS uses one thread; nothing to do once pinned."""
    return nullcontext() if _pinned else _limit_to_one()


def on_one_thread(func: Callable[P, R]) -> Callable[P, R]:
    """`func` run with numpy's BLAS on one thread, whatever the process set before, even after
    `pin_one_thread` (other code in the process may have raised the limit again since).

    A float32 product's last bits depend on how many threads OpenBLAS splits it over: a profile
    built where a server had pinned one thread differed by an ulp from one built elsewhere.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _limit_to_one():
            return func(*args, **kwargs)

    return wrapper


def pin_one_thread() -> None:
    """Keep numpy's BLAS on one thread for the rest of the process (the server does this).

    Entering and leaving `one_thread` costs about 0.2 ms, as much as scoring a request's
    inputs; a server, whose numpy products are all small, pins once and skips it after.
    """
    global _pinned
    _limit_to_one()  # not used as a context: it stays
    _pinned = True
