"""The OOD score as an ONNX graph, against the numpy scorer: time, cold caches, the GIL.

A candidate design for the serving cost (docs/benchmarks.md, "What monitoring costs the
server"): the scorer's arithmetic (`OodScorer._score`) as a 15-node ONNX graph over the same
precomputed matrices, run by ONNX Runtime. Prints, side by side:

- the largest relative difference of the two scores on one batch;
- the time of one call on a batch of 4 embeddings, with warm caches and with caches evicted
  before each call (as a model call does);
- how much of its speed a pure-Python thread keeps while the other thread scores in a loop
  (the GIL each scorer holds).

Needs `onnx` (the train extra). From the repository root:

    python -m benchmarks.monitoring.ood_in_onnx --profile runs/bench/monitoring/profiles/digits
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mlfactory.monitoring.blas import pin_one_thread
from mlfactory.monitoring.ood import OodScorer
from mlfactory.monitoring.profile import load_profile

BATCH = 4
CALLS = 300
EVICT_BYTES = 64_000_000


def scorer_graph(scorer: OodScorer) -> bytes:
    """The scorer's arithmetic as a serialized ONNX model: input `x` (N, D), output `score`."""
    fused = scorer._fused
    dims, width = scorer._dims, fused.shape[0]
    classes = fused.shape[1] - dims

    def const(name: str, value: Any, dtype: Any = np.float32) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    initializers = [
        const("F", fused),
        const("w", scorer._weights.reshape(dims, 1)),
        const("r", [scorer._residual]),
        const("c", scorer._constants.reshape(1, classes)),
        const("minus2", [-2.0]),
        const("eps", [1e-24]),
        const("per_dim", [1.0 / width]),
        const("start", [0], np.int64),
        const("split", [dims], np.int64),
        const("end", [dims + classes], np.int64),
        const("axis", [1], np.int64),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "F"], ["raw"]),
        helper.make_node("ReduceSumSquare", ["x", "axis"], ["squared"], keepdims=1),
        helper.make_node("Max", ["squared", "eps"], ["floored"]),
        helper.make_node("Sqrt", ["floored"], ["norm"]),
        helper.make_node("Div", ["raw", "norm"], ["products"]),
        helper.make_node("Slice", ["products", "start", "split", "axis"], ["along"]),
        helper.make_node("Slice", ["products", "split", "end", "axis"], ["linear"]),
        helper.make_node("Mul", ["along", "along"], ["along2"]),
        helper.make_node("MatMul", ["along2", "w"], ["weighted"]),
        helper.make_node("Add", ["weighted", "r"], ["rows"]),
        helper.make_node("Add", ["rows", "c"], ["shifted"]),
        helper.make_node("Mul", ["linear", "minus2"], ["cross"]),
        helper.make_node("Add", ["shifted", "cross"], ["distances"]),
        helper.make_node("ReduceMin", ["distances", "axis"], ["nearest"], keepdims=0),
        helper.make_node("Mul", ["nearest", "per_dim"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ood_score",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def median_us(call: Callable[[], object], evict: np.ndarray | None) -> float:
    """Median wall time of one call, in microseconds (caches evicted first if `evict`)."""
    times = []
    for _ in range(CALLS):
        if evict is not None:
            evict += 1.0
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e6)


def python_speed_beside(call: Callable[[], object], seconds: float = 2.0) -> int:
    """Loop iterations a pure-Python thread makes while this thread runs `call` in a loop."""
    stop = time.perf_counter() + seconds
    count = [0]

    def spin() -> None:
        while time.perf_counter() < stop:
            count[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    while time.perf_counter() < stop:
        call()
    thread.join()
    return count[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, required=True, help="a folder with profile.npz")
    args = parser.parse_args(argv)
    pin_one_thread()
    profile = load_profile(args.profile)
    if profile is None:
        raise SystemExit(f"--profile {args.profile}: no profile.npz there")
    scorer = profile.ood
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        scorer_graph(scorer), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, scorer._fused.shape[0])).astype(np.float32)
    in_onnx = session.run(["score"], {"x": x})[0]
    in_numpy = scorer.score(x)
    difference = float(np.max(np.abs(in_onnx - in_numpy) / in_numpy))
    print(f"largest relative difference: {difference:.1e}")
    evict = np.ones(EVICT_BYTES // 8)
    callers: dict[str, Callable[[], object]] = {
        "numpy": lambda: scorer.score(x),
        "onnx runtime": lambda: session.run(["score"], {"x": x}),
    }
    alone = python_speed_beside(lambda: time.sleep(0.001))
    for name, call in callers.items():
        warm, cold = median_us(call, None), median_us(call, evict)
        kept = python_speed_beside(call) / alone
        print(
            f"{name:13s} {warm:6.1f} us warm, {cold:6.1f} us cold; a Python thread beside it "
            f"keeps {kept:.0%} of its speed"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
