"""What monitoring costs a server at saturation: throughput with it on against off, one run.

Two `mlfactory serve` processes of the same bundle run side by side: "on" is the bundle with its
monitoring profile (an OOD score per input, computed in the model's graph as export puts it
there, the extra log columns, the background drift check every `MLFACTORY_MONITOR_EVERY`
predictions), "off" the same files without `profile.npz` and `profile.json` and with the model
as it was before the scorer was appended. Closed-loop loads (benchmarks/serving/load.py)
alternate between them, on/off then off/on, so that a change in what else runs on the machine
falls on both sides alike; `--restarts` starts fresh server processes that many times (in
alternating order), so that one process's luck does not decide the result. The ratio is the
median of the per-pair throughput ratios (target: at least 0.97), with a bootstrap 95 %
interval; beside it, the median ratio of server CPU time per request. `--control` serves "off"
on both sides: the ratio two identical servers give, i.e. the resolution of the method.

    .venv/bin/python -m benchmarks.monitoring.serving_cost \
        --bundle runs/bench/monitoring/runs/digits/bundle \
        --profile runs/bench/monitoring/profiles/digits --restarts 4 --rounds 10 --duration 6
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.monitoring.bare_model import strip_monitoring
from benchmarks.serving.processes import HOST, PYTHON, Server, run_load, start_server
from PIL import Image

from mlfactory.bundle import load_bundle
from mlfactory.data.packaged import mnist_csv
from mlfactory.monitoring.profile import ARRAYS_FILE, META_FILE
from mlfactory.training.ood_graph import attach_ood_score

IMAGES = 200


def add_pair_options(parser: argparse.ArgumentParser, duration_s: float) -> None:
    """The options of a side-by-side run of two servers: rounds, restarts, load length, clients."""
    parser.add_argument(
        "--rounds", type=int, default=4, help="on/off pairs per restart, order alternating"
    )
    parser.add_argument(
        "--restarts", type=int, default=1, help="fresh pairs of server processes, one after another"
    )
    parser.add_argument("--duration", type=float, default=duration_s, help="seconds per load")
    parser.add_argument("--concurrency", type=int, default=8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="an image bundle folder")
    parser.add_argument(
        "--profile", type=Path, help="folder of its profile files (default: the bundle's own)"
    )
    add_pair_options(parser, duration_s=15.0)
    parser.add_argument(
        "--monitor-every", help="MLFACTORY_MONITOR_EVERY of 'on' (default: the server's)"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="serve 'off' on both sides: the ratio two identical servers give (the noise floor)",
    )
    return parser.parse_args(argv)


def write_images(folder: Path) -> Path:
    """The first real MNIST digits as JPEG files (the load generator's payloads)."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(mnist_csv(), "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.uint8, max_rows=IMAGES)
    for index, row in enumerate(rows):
        image = Image.fromarray(row[:-1].reshape(28, 28), "L").convert("RGB")
        image.save(folder / f"digit_{index:03d}.jpg", quality=95)
    return folder


def bundles(source: Path, profile: Path | None, root: Path) -> tuple[Path, Path]:
    """Copies of the bundle with its profile ("on") and without it ("off")."""
    on, off = root / "on", root / "off"
    shutil.copytree(source, on)
    if profile is not None:
        for name in (ARRAYS_FILE, META_FILE):
            shutil.copy2(profile / name, on / name)
    if not (on / ARRAYS_FILE).is_file():
        raise SystemExit(f"--bundle {source}: no monitoring profile (pass --profile)")
    shutil.copytree(on, off)
    for name in (ARRAYS_FILE, META_FILE):
        (off / name).unlink()
    strip_monitoring(off)  # the model without the scorer and the early features
    if not attach_ood_score(load_bundle(on), []):
        raise SystemExit(f"{on}: the OOD score could not be put in the model's graph")
    return on, off


def serve(
    name: str,
    bundle: Path,
    root: Path,
    monitor_every: str | None,
    env: dict[str, str] | None = None,
) -> Server:
    """`mlfactory serve` of `bundle` logging to its own SQLite file in `root`, once ready."""
    command = [PYTHON, "-m", "mlfactory.cli", "serve", str(bundle), "--host", HOST, "--port"]
    env = {"MLFACTORY_LOG_URL": f"sqlite:///{root / f'{name}.db'}", **(env or {})}
    if monitor_every is not None:
        env["MLFACTORY_MONITOR_EVERY"] = monitor_every
    server = start_server(name, command, root, env)
    server.wait_ready(180)
    return server


def cpu_ms_per_request(load: dict[str, Any]) -> float:
    """Server CPU time per answered request: what monitoring adds, whatever else runs."""
    return 1000.0 * load["server_cpu_cores"] * load["elapsed_s"] / max(load["ok"], 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="monitoring-cost-"))
    images = write_images(root / "images")
    on, off = bundles(args.bundle, args.profile, root)
    if args.control:
        on = off
    pairs: list[dict[str, Any]] = []

    def load(server: Server) -> dict[str, Any]:
        return run_load(server, images, args.concurrency, args.duration, 100_000)

    for start in range(args.restarts):
        # Fresh processes each time, started in alternating order: one server process can run a
        # few per cent faster than an identical one for its whole life (memory layout).
        first = ("on", "off") if start % 2 == 0 else ("off", "on")
        every = {"on": args.monitor_every, "off": "0"}
        servers = {
            side: serve(side, on if side == "on" else off, root, every[side]) for side in first
        }
        try:
            for server in servers.values():  # warm-up: first requests pay one-off costs
                run_load(server, images, args.concurrency, 3.0, 10_000)
            for _ in range(args.rounds):
                pairs.append(measure_pair(servers, load, len(pairs)))
        finally:
            for server in servers.values():
                server.stop()
    print(json.dumps({**pair_summary(args, pairs), "pairs": pairs}))
    shutil.rmtree(root, ignore_errors=True)
    return 0


def measure_pair(
    servers: dict[str, Server], load: Callable[[Server], dict[str, Any]], index: int
) -> dict[str, Any]:
    """One `load` on each of the servers "on" and "off", in alternating order; their
    throughput and CPU ratios."""
    order = ("on", "off") if index % 2 == 0 else ("off", "on")
    pair = {side: load(servers[side]) for side in order}
    ratio = pair["on"]["throughput_rps"] / pair["off"]["throughput_rps"]
    cpu = cpu_ms_per_request(pair["on"]) / cpu_ms_per_request(pair["off"])
    print(
        f"pair {index + 1}: on {pair['on']['throughput_rps']:.1f} req/s, "
        f"off {pair['off']['throughput_rps']:.1f} req/s, ratio {ratio:.3f}; server CPU "
        f"per request on/off {cpu:.3f}",
        flush=True,
    )
    return {"order": order, "ratio": round(ratio, 4), "cpu_ratio": round(cpu, 4), **pair}


def pair_summary(args: argparse.Namespace, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's settings and the median on/off throughput and CPU ratios of its pairs."""
    ratios = np.array([pair["ratio"] for pair in pairs])
    return {
        "bundle": str(args.bundle),
        "control": args.control,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "restarts": args.restarts,
        "median_ratio": float(np.median(ratios)),
        "median_ratio_95ci": bootstrap_median_interval(ratios),
        "median_cpu_ratio": statistics.median(pair["cpu_ratio"] for pair in pairs),
    }


def bootstrap_median_interval(ratios: np.ndarray, resamples: int = 10_000) -> list[float]:
    """A 95 % bootstrap interval of the median ratio (seeded)."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, (resamples, len(ratios))), axis=1)
    return [round(float(q), 4) for q in np.quantile(medians, [0.025, 0.975])]


if __name__ == "__main__":
    raise SystemExit(main())
