"""The OOD score as an ONNX graph, against the numpy scorer: time, cold caches, the GIL.

The scorer's arithmetic (`OodScorer._score`) as the ONNX nodes that export appends to a
bundle's model (`mlfactory.training.ood_graph`), run by ONNX Runtime alone, beside the numpy
scorer. Prints, side by side:

- the largest relative difference of the two scores on one batch;
- the time of one call on a batch of 4 embeddings, with warm caches and with caches evicted
  before each call (as a model call does);
- how much of its speed a pure-Python thread keeps while the other thread scores in a loop
  (the GIL each scorer holds);
- with `--bundle` (a digits bundle, scored with the profile of `--profile`): one model call on
  4 real MNIST digits as the server makes it, plain (its scorer taken out), followed by the
  numpy scorer, and with the scorer in the graph, timed in interleaved rounds.

Needs `onnx` (the train extra). From the repository root:

    python -m benchmarks.monitoring.ood_in_onnx --profile runs/bench/monitoring/profiles/digits \
        --bundle runs/bench/monitoring/runs/digits/bundle
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from benchmarks.monitoring.bare_model import strip_monitoring
from PIL import Image

from mlfactory.bundle import EARLY_FEATURES, EMBEDDING, OOD_SCORE, load_bundle
from mlfactory.data.packaged import mnist_csv
from mlfactory.monitoring.blas import pin_one_thread
from mlfactory.monitoring.profile import ARRAYS_FILE, META_FILE, load_profile
from mlfactory.predictor import Predictor
from mlfactory.serving.monitoring import ood_scores
from mlfactory.training.ood_graph import attach_ood_score, remove_scorer, scorer_model

BATCH = 4
CALLS = 300
EVICT_BYTES = 64_000_000


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
    parser.add_argument("--bundle", type=Path, help="time whole model calls of this bundle too")
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
        scorer_model(scorer).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feeds = {
        EMBEDDING: rng.standard_normal((BATCH, scorer.class_means.shape[1])).astype(np.float32)
    }
    if scorer.early is not None:
        width = scorer.early.class_means.shape[1]
        feeds[EARLY_FEATURES] = rng.standard_normal((BATCH, width)).astype(np.float32)
    in_onnx = session.run([OOD_SCORE], feeds)[0]
    in_numpy = scorer.score(*feeds.values())
    difference = float(np.max(np.abs(in_onnx - in_numpy) / (np.abs(in_numpy) + 1.0)))
    print(f"largest difference (relative to |score| + 1): {difference:.1e}")
    evict = np.ones(EVICT_BYTES // 8)
    callers: dict[str, Callable[[], object]] = {
        "numpy": lambda: scorer.score(*feeds.values()),
        "onnx runtime": lambda: session.run([OOD_SCORE], feeds),
    }
    alone = python_speed_beside(lambda: time.sleep(0.001))
    for name, call in callers.items():
        warm, cold = median_us(call, None), median_us(call, evict)
        kept = python_speed_beside(call) / alone
        print(
            f"{name:13s} {warm:6.1f} us warm, {cold:6.1f} us cold; a Python thread beside it "
            f"keeps {kept:.0%} of its speed"
        )
    if args.bundle is not None:
        model_calls(args.bundle, args.profile)
    return 0


def model_calls(source: Path, profile: Path, rounds: int = 20) -> None:
    """Time one server model call on 4 digits: plain, + numpy scorer, scorer in the graph."""
    with tempfile.TemporaryDirectory() as folder:
        scored = Path(shutil.copytree(source, Path(folder) / "bundle"))
        for name in (ARRAYS_FILE, META_FILE):
            shutil.copy2(profile / name, scored / name)
        attach_ood_score(load_bundle(scored), [])
        bare = Path(shutil.copytree(scored, Path(folder) / "bare"))
        strip_monitoring(bare)  # the model without the scorer and the early features
        plain = Predictor.from_path(bare)
        unscored = Path(shutil.copytree(scored, Path(folder) / "unscored"))
        model = onnx.load(str(unscored / "model.onnx"))
        remove_scorer(model)  # early features still out: the numpy scorer needs them
        onnx.save(model, str(unscored / "model.onnx"))
        in_numpy = Predictor.from_path(unscored)
        in_numpy.profile = load_profile(scored)
        in_graph = Predictor.from_path(scored)
        in_graph.profile = load_profile(scored)
        assert in_graph.scores_in_graph and not in_numpy.scores_in_graph
        encoded = [plain.encode(raw) for raw in mnist_pngs(BATCH)]
        calls: dict[str, Callable[[], object]] = {
            "model": lambda: plain.run(encoded),
            "model, then numpy scorer": lambda: ood_scores(in_numpy, in_numpy.run(encoded)),
            "model with the scorer in it": lambda: ood_scores(in_graph, in_graph.run(encoded)),
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):  # interleaved: a change in the machine's speed hits all alike
            for name, call in calls.items():
                times[name].append(median_us(call, None))
        base = float(np.median(times["model"]))
        for name, measured in times.items():
            median = float(np.median(measured))
            print(f"{name:28s} {median:7.0f} us, {median / base:.3f} of the plain model call")


def mnist_pngs(count: int) -> list[bytes]:
    """The first `count` MNIST test digits, as PNG files a client would send."""
    with gzip.open(mnist_csv(), "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.uint8, max_rows=count)
    raws = []
    for row in rows:
        buffer = io.BytesIO()
        Image.fromarray(row[:-1].reshape(28, 28), "L").save(buffer, "PNG")
        raws.append(buffer.getvalue())
    return raws


if __name__ == "__main__":
    raise SystemExit(main())
