"""Closed-loop HTTP load: N concurrent clients, each posting one JPEG and waiting for the answer.

Runs as its own process (the orchestrator starts it once per concurrency level), against
127.0.0.1 only, bounded by a duration and a request cap, whichever comes first. Each request is
`POST <url>` multipart with one file in the field `files`, the payloads cycling through the
given images; with `--unique`, each request's bytes differ (a random tag of the load and the
request's number follow the image's end marker, which decoders ignore), so a server that keeps
inputs by content sees a new one every time. Prints one JSON object: throughput (successful
answers per second of wall time), latency percentiles of the successful requests, error count,
and the CPU cores used by the client itself and (with `--server-pid`) by the server's process
tree and by everything else on the machine (`other_cpu_cores`: should be near 0 for a clean
measurement).

    .venv/bin/python -m benchmarks.serving.load --url http://127.0.0.1:8100/v1/predict \
        --images runs/bench/images --concurrency 8 --duration 20 --max-requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import numpy as np
from benchmarks.serving.processes import machine_busy_seconds, tree_cpu_seconds

LOCALHOST = {"127.0.0.1", "localhost", "::1"}


async def drive(
    url: str,
    payloads: list[bytes],
    concurrency: int,
    duration_s: float,
    max_requests: int,
    timeout_s: float,
    unique: bool = False,
) -> dict[str, Any]:
    """Run the load and summarise it."""
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    cycle = itertools.cycle(range(len(payloads)))
    nonce = secrets.token_hex(8)  # no two loads send the same bytes either
    cpu_started, started = time.process_time(), time.perf_counter()
    deadline = started + duration_s
    last_done = started

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal issued, last_done
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            payload = payloads[next(cycle)]
            if unique:
                payload += f"#{nonce}-{issued}".encode()
            form = aiohttp.FormData()
            form.add_field("files", payload, filename="image.jpg", content_type="image/jpeg")
            sent = time.perf_counter()
            try:
                async with session.post(url, data=form) as response:
                    await response.read()
                    ok = response.status == 200
                    if not ok:
                        errors.append(f"HTTP {response.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok = False
                errors.append(type(exc).__name__)
            done = time.perf_counter()
            last_done = max(last_done, done)
            if ok:
                latencies.append(done - sent)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    elapsed = last_done - started
    ms = np.asarray(latencies) * 1000.0
    client_cpu = time.process_time() - cpu_started
    return {
        "concurrency": concurrency,
        "requests": issued,
        "ok": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 3) if elapsed > 0 else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p90_ms": round(float(np.percentile(ms, 90)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
        "client_cpu_cores": round(client_cpu / elapsed, 3) if elapsed > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop HTTP load on 127.0.0.1")
    parser.add_argument("--url", required=True)
    parser.add_argument("--images", type=Path, required=True, help="folder of *.jpg payloads")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds (upper bound)")
    parser.add_argument("--max-requests", type=int, default=2000, help="upper bound")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--server-pid", type=int, help="report this process tree's CPU use")
    parser.add_argument(
        "--unique", action="store_true", help="make every request's bytes differ (see above)"
    )
    args = parser.parse_args()
    host = urlparse(args.url).hostname
    if host not in LOCALHOST:
        raise SystemExit(f"--url: {host} is not this machine; the benchmark only loads 127.0.0.1")
    payloads = [path.read_bytes() for path in sorted(args.images.glob("*.jpg"))]
    if not payloads:
        raise SystemExit(f"--images: no *.jpg in {args.images}")
    cpu_before = tree_cpu_seconds(args.server_pid) if args.server_pid else 0.0
    busy_before, started = machine_busy_seconds(), time.perf_counter()
    result = asyncio.run(
        drive(
            args.url,
            payloads,
            args.concurrency,
            args.duration,
            args.max_requests,
            args.timeout,
            args.unique,
        )
    )
    if args.server_pid:
        wall = time.perf_counter() - started
        server = (tree_cpu_seconds(args.server_pid) - cpu_before) / wall
        machine = (machine_busy_seconds() - busy_before) / wall
        result["server_cpu_cores"] = round(server, 3)
        result["machine_cpu_cores"] = round(machine, 3)
        # Neither this client nor the server: other processes competing for the same cores.
        result["other_cpu_cores"] = round(machine - server - result["client_cpu_cores"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
