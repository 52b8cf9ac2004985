"""What keeping the inputs costs a server at saturation: `MLFACTORY_INPUT_STORE` on against off.

Two `mlfactory serve` processes of the same image bundle run side by side: "on" keeps every
predicted input in a store folder (src/mlfactory/serving/input_store.py: each new input written
under a temporary name and renamed, before the answer), "off" keeps none. By default every
request sends bytes never sent before (`--unique` of benchmarks/serving/load.py), so each one is
a new file: the worst case. `--repeat` cycles through the same 200 images instead, so after the
first ones only the files' times change (a client that re-sends what it sent). The method is
that of benchmarks/monitoring/serving_cost.py: closed-loop loads alternate between the two
servers in pairs, `--restarts` starts fresh processes that many times, the figure is the median
of the per-pair throughput ratios with a bootstrap 95 % interval, and `--control` runs "off" on
both sides (the resolution of the method).

Beside it, in this process: the hash every request pays with the store on or off (the log's
`input_sha256`), SHA-256 of the same payloads, against the server CPU time of a request; and
`InputStore.keep` of new inputs as it is (no fsync) against the same with an fsync of each file
before its rename, alternating in blocks. At the end, the files in each store against the answers
that server gave: every answered input must be in it.

`--store` puts the stores on a file system of your choice, e.g. an object store mounted with
FUSE; there each file takes tens of milliseconds, so time fewer inputs in this process
(`--keep-blocks 2 --keep-block-size 50`).

    .venv/bin/python -m benchmarks.serving.input_store_cost --bundle runs/digits/bundle \
        --restarts 4 --rounds 5 --duration 6
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.monitoring.serving_cost import (
    add_pair_options,
    cpu_ms_per_request,
    measure_pair,
    pair_summary,
    serve,
    write_images,
)
from benchmarks.serving.processes import Server, run_load

from mlfactory.serving.input_store import InputStore, input_digest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="an image bundle folder")
    add_pair_options(parser, duration_s=6.0)
    parser.add_argument(
        "--repeat",
        action="store_true",
        help="send the same 200 images again and again instead of new bytes every request",
    )
    parser.add_argument(
        "--store",
        type=Path,
        help="folder for the stores (default: a temporary folder; put it on the disk to measure)",
    )
    parser.add_argument(
        "--keep-blocks",
        type=int,
        default=6,
        help="blocks of InputStore.keep timed in this process, alternating as kept / with fsync",
    )
    parser.add_argument("--keep-block-size", type=int, default=500, help="new inputs a block")
    parser.add_argument(
        "--control",
        action="store_true",
        help="keep no inputs on either side: the ratio two identical servers give",
    )
    return parser.parse_args(argv)


def sha256_us_per_input(images: Path, repeats: int = 200) -> float:
    """Microseconds to hash one of the load's payloads, as the server hashes each input."""
    payloads = [path.read_bytes() for path in sorted(images.glob("*.jpg"))]
    started = time.perf_counter()
    for _ in range(repeats):
        for payload in payloads:
            hashlib.sha256(payload).hexdigest()
    return 1e6 * (time.perf_counter() - started) / (repeats * len(payloads))


def keep_with_fsync(store: InputStore, raw: bytes, digest: str) -> None:
    """`InputStore.keep` of one new input, with an fsync of the file before its rename."""
    target = store.path(digest)
    target.parent.mkdir(exist_ok=True)
    partial = target.with_name(f".{digest}")
    with partial.open("wb") as handle:
        handle.write(raw)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)


def keep_us_per_new_input(
    images: Path, folder: Path, blocks: int = 6, size: int = 500
) -> dict[str, float]:
    """Wall and CPU microseconds to keep one new input, as kept and with an fsync, in
    alternating blocks of `size` (median block)."""
    payloads = [path.read_bytes() for path in sorted(images.glob("*.jpg"))]
    store = InputStore.open(str(folder))
    timings: dict[str, list[tuple[float, float]]] = {"as kept": [], "with fsync": []}
    count = 0
    for block in range(blocks):
        for way in ("as kept", "with fsync") if block % 2 == 0 else ("with fsync", "as kept"):
            raws = [payloads[i % len(payloads)] + f"#{count + i}".encode() for i in range(size)]
            count += len(raws)
            digests = [input_digest(raw) for raw in raws]
            wall, cpu = time.perf_counter(), time.thread_time()
            for raw, digest in zip(raws, digests, strict=True):
                if way == "as kept":
                    store.keep([raw], [digest])
                else:
                    keep_with_fsync(store, raw, digest)
            timings[way].append((time.perf_counter() - wall, time.thread_time() - cpu))
    return {
        f"{way} {kind}": round(1e6 * statistics.median(t[k] for t in blocks_) / size, 1)
        for way, blocks_ in timings.items()
        for k, kind in enumerate(("wall_us", "cpu_us"))
    }


def files_in(store: Path) -> int:
    """Inputs kept in `store` (its temporary files excluded)."""
    return sum(1 for path in store.glob("??/*") if not path.name.startswith("."))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="input-store-cost-", dir=args.store))
    images = write_images(root / "images")
    pairs: list[dict[str, Any]] = []
    kept: list[dict[str, int]] = []

    def load(server: Server) -> dict[str, Any]:
        return run_load(server, images, args.concurrency, args.duration, 100_000, not args.repeat)

    for start in range(args.restarts):
        store = root / f"store-{start}"
        env = {"on": {} if args.control else {"MLFACTORY_INPUT_STORE": str(store)}, "off": {}}
        first = ("on", "off") if start % 2 == 0 else ("off", "on")
        servers = {side: serve(side, args.bundle, root, None, env[side]) for side in first}
        answered = 0
        try:
            for side, server in servers.items():  # warm-up: first requests pay one-off costs
                warm = run_load(server, images, args.concurrency, 3.0, 10_000, not args.repeat)
                answered += warm["ok"] if side == "on" else 0
            for _ in range(args.rounds):
                pair = measure_pair(servers, load, len(pairs))
                answered += pair["on"]["ok"]
                pairs.append(pair)
        finally:
            for server in servers.values():
                server.stop()
        if not args.control:
            distinct = len(list(images.glob("*.jpg"))) if args.repeat else answered
            expected = min(answered, distinct)
            files = files_in(store)
            kept.append({"answered": answered, "expected_files": expected, "files": files})
            print(f"restart {start + 1}: {kept[-1]}", flush=True)
        # The stores stay until the end: on ext4, new files in a block group where many were
        # deleted minutes before cost up to 10 times the kernel time (see docs/benchmarks.md).
    off_cpu_ms = statistics.median(cpu_ms_per_request(pair["off"]) for pair in pairs)
    hash_us = sha256_us_per_input(images)
    keep_us = (
        keep_us_per_new_input(images, root / "keep-timing", args.keep_blocks, args.keep_block_size)
        if args.keep_blocks > 0
        else {}
    )
    result = {
        **pair_summary(args, pairs),
        "inputs": "repeated" if args.repeat else "new every request",
        "median_rps": {
            side: statistics.median(pair[side]["throughput_rps"] for pair in pairs)
            for side in ("on", "off")
        },
        "median_p99_ms": {
            side: statistics.median(pair[side]["p99_ms"] for pair in pairs)
            for side in ("on", "off")
        },
        "sha256_us_per_input": round(hash_us, 2),
        "server_cpu_ms_per_request_off": round(off_cpu_ms, 3),
        "sha256_share_of_request_cpu": round(hash_us / 1000.0 / off_cpu_ms, 5),
        "keep_us_per_new_input": keep_us,
        "stores": kept,
        "every_answer_kept": all(k["files"] == k["expected_files"] for k in kept),
        "pairs": pairs,
    }
    print(json.dumps(result))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
