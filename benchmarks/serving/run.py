"""Serving benchmark: mlfactory's API against its limit and against other ways to serve the model.

One run, one machine, one model (resnet18, 224 px, one ~500x375 JPEG per request):

(a)  bare ONNX Runtime in-process, batched: the limit (`inprocess.py`); (a') the same with the
     JPEG decoding and preprocessing a request needs, still in-process;
(b)  the mlfactory API (`mlfactory serve`), fp32 and int8 (static QDQ, `quantize.py`);
(c)  a seed-style FastAPI server running torch per request (`seed_server.py`); (c') the same
     loading the checkpoint for every request, as the emotions seed did;
(d)  LitServe with batching, on the same ORT bundle and on torch (`litserve_server.py`).

Every server is its own process on a free 127.0.0.1 port; load comes from a separate aiohttp
client process (`load.py`), closed loop, bounded in time and requests. For each server: idle CPU
over a few seconds, then throughput and p50/p99 latency at each concurrency level. Results go to
`<out>/results.json` and `<out>/serving.md` (the block docs/benchmarks.md quotes).

From the repository root:

    .venv/bin/python -m benchmarks.serving.run                 # full run (~10 min on 2 cores)
    .venv/bin/python -m benchmarks.serving.run --quick         # smoke test (~2 min)
    .venv/bin/python -m benchmarks.serving.run --servers mlfactory,litserve-ort --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.serving import artifacts, report
from benchmarks.serving.processes import PYTHON, busy_cores, idle_cores, run_load, start_server
from benchmarks.serving.quantize import FLOAT_CONVS

SERVERS = (
    "mlfactory",
    "mlfactory-int8",
    "seed-torch",
    "seed-torch-reload",
    "litserve-ort",
    "litserve-torch",
)
DIGITS_BUNDLES = ("runs/bench/digits/bundle", "runs/digits/bundle", "mlfactory-demo/bundle")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serving benchmark (see benchmarks/serving/run.py's docstring)."
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/bench"),
        help="where the bundle, images and int8 bundle are built and reused",
    )
    parser.add_argument(
        "--out", type=Path, help="results folder (default runs/bench/serving-<time>)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated subset of {','.join(SERVERS)}",
    )
    parser.add_argument("--concurrency", default="1,8,16,32", help="levels, comma-separated")
    parser.add_argument(
        "--saturation",
        type=int,
        help="level whose req/s is 'throughput at saturation' (default: highest)",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level (max)")
    parser.add_argument("--max-requests", type=int, default=3000, help="requests per level (max)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before measuring"
    )
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle-CPU measurement")
    parser.add_argument(
        "--inprocess-seconds", type=float, default=8.0, help="seconds per in-process figure"
    )
    parser.add_argument(
        "--paired-seconds",
        type=float,
        default=3.0,
        help="seconds per in-process figure re-measured beside each mlfactory server",
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="LitServe's batch cap")
    parser.add_argument(
        "--batch-timeout", type=float, default=0.01, help="LitServe's batch window, seconds"
    )
    parser.add_argument(
        "--digits-bundle",
        type=Path,
        help=f"trained bundle for the int8 accuracy check (default: first of "
        f"{', '.join(DIGITS_BUNDLES)}; trained into the first if none)",
    )
    parser.add_argument("--no-accuracy", action="store_true", help="skip the int8 accuracy check")
    parser.add_argument(
        "--float-convs",
        type=int,
        default=FLOAT_CONVS,
        help="first convolutions kept in float in the int8 bundle",
    )
    parser.add_argument(
        "--sweep",
        default="0,1,2,3",
        help="--float-convs values whose accuracy and speed are compared",
    )
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument(
        "--wait-for-load",
        type=float,
        metavar="LOAD",
        help="first wait until the 1-min load average is below LOAD "
        "(polled every 60 s, at most --wait-max seconds)",
    )
    parser.add_argument("--wait-max", type=float, default=2400.0)
    parser.add_argument(
        "--wait-between",
        type=float,
        default=300.0,
        help="with --wait-for-load: most seconds to wait before each later phase",
    )
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="'quiet' means fewer busy cores than this (other processes' CPU during a level; "
        "with --wait-for-load, the whole machine's over 5 s before a phase)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measure a level again (at most this often) when other processes used more than "
        "--quiet-cores cores during it",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 3 s / 60 requests per level at c=1,4, short warm-up",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.duration, args.max_requests = "1,4", 3.0, 60
        args.warmup, args.idle, args.inprocess_seconds = 1.0, 2.0, 1.0
        args.paired_seconds = 0.5
        args.sweep = str(args.float_convs)
    args.levels = sorted({int(c) for c in args.concurrency.split(",")})
    args.saturation = args.saturation or max(args.levels)
    if args.saturation not in args.levels:
        parser.error(f"--saturation {args.saturation} is not one of --concurrency {args.levels}")
    args.server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_names) - set(SERVERS)
    if unknown:
        parser.error(f"--servers: unknown {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    return args


def _python_module(module: str, *arguments: str, timeout: float = 3600) -> dict[str, Any]:
    """Run `python -m module ...` and return the JSON object it printed last."""
    done = subprocess.run(
        [PYTHON, "-m", module, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# Servers whose ratios to bare ORT are measured in pairs: the in-process figures are taken again
# while that server is up but idle, right before its first level and right after its last, so a
# slow spell of a shared machine cannot fall between a server and its own limit.
PAIRED = {"mlfactory": "fp32", "mlfactory-int8": "int8"}


def server_bundles(args: argparse.Namespace) -> dict[str, Path]:
    return {
        "mlfactory": artifacts.bundle_dir(args.cache),
        "mlfactory-int8": artifacts.int8_bundle_dir(args.cache),
    }


def in_process(bundle: Path, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """The bare-ORT figures of `bundle` (benchmarks.serving.inprocess), `seconds` per figure."""
    images = str(artifacts.images_dir(args.cache))
    return _python_module(
        "benchmarks.serving.inprocess",
        "--bundle",
        str(bundle),
        "--images",
        images,
        "--seconds",
        str(seconds),
    )


def server_commands(args: argparse.Namespace) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Command (port appended last) and extra environment of each server."""
    bundles, weights = server_bundles(args), artifacts.torch_dir(args.cache)
    bundle = bundles["mlfactory"]
    mlfactory = str(Path(PYTHON).parent / "mlfactory")
    seed = [PYTHON, "-m", "benchmarks.serving.seed_server", "--weights", str(weights)]
    litserve = [
        PYTHON,
        "-m",
        "benchmarks.serving.litserve_server",
        "--max-batch-size",
        str(args.max_batch_size),
        "--batch-timeout",
        str(args.batch_timeout),
    ]

    def ours(path: Path, name: str) -> tuple[list[str], dict[str, str]]:
        # The prediction log is part of what the API does per request: keep it, but in `out`.
        log_url = f"sqlite:///{(args.out / f'predictions-{name}.db').resolve()}"
        command = [mlfactory, "serve", str(path), "--host", "127.0.0.1", "--port"]
        return command, {"MLFACTORY_LOG_URL": log_url}

    return {
        "mlfactory": ours(bundle, "mlfactory"),
        "mlfactory-int8": ours(bundles["mlfactory-int8"], "mlfactory-int8"),
        "seed-torch": ([*seed, "--port"], {}),
        "seed-torch-reload": ([*seed, "--reload-per-request", "--port"], {}),
        "litserve-ort": ([*litserve, "--backend", "ort", "--bundle", str(bundle), "--port"], {}),
        "litserve-torch": (
            [*litserve, "--backend", "torch", "--weights", str(weights), "--port"],
            {},
        ),
    }


def bench_server(
    name: str, command: list[str], env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Start one server, measure it idle and under each load level, stop it."""
    images = artifacts.images_dir(args.cache)
    server = start_server(name, command, args.out, env)
    result: dict[str, Any] = {"command": " ".join([*command, str(server.port)])}
    try:
        result["startup_s"] = round(server.wait_ready(args.startup_timeout), 2)
        warmup = run_load(server, images, args.saturation, args.warmup, 200)
        result["warmup"] = warmup
        time.sleep(2.0)  # let batch loops and thread pools go quiet
        result["idle_cpu_cores"] = round(idle_cores(server, args.idle), 4)
        result["levels"] = {}
        paired = PAIRED.get(name)
        bundle = server_bundles(args).get(name)
        if paired and bundle:
            result["in_process_before"] = in_process(bundle, args, args.paired_seconds)
        for level in args.levels:
            run = run_load(server, images, level, args.duration, args.max_requests)
            retries = 0
            # Another process took CPU meanwhile: the figure says little about this server.
            while run.get("other_cpu_cores", 0.0) > args.quiet_cores and retries < args.retries:
                retries += 1
                print(
                    f"  {name} c={level}: other processes used {run['other_cpu_cores']} "
                    f"cores; measuring again ({retries}/{args.retries})",
                    flush=True,
                )
                run = run_load(server, images, level, args.duration, args.max_requests)
            run["retries"] = retries
            result["levels"][str(level)] = run
            print(
                f"  {name} c={level}: {run['throughput_rps']} req/s, p50 {run['p50_ms']} ms, "
                f"p99 {run['p99_ms']} ms, errors {run['errors']}",
                flush=True,
            )
        if paired and bundle:
            result["in_process_after"] = in_process(bundle, args, args.paired_seconds)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result["error"] = str(exc)
        print(f"  {name} FAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return result


def find_digits_bundle(args: argparse.Namespace) -> Path | None:
    """A bundle trained on today's digits data, training one if none exists (not in --quick)."""
    candidates = [args.digits_bundle] if args.digits_bundle else list(map(Path, DIGITS_BUNDLES))
    for candidate in candidates:
        if not (candidate / "model.onnx").is_file():
            continue
        check = _python_module("benchmarks.serving.quantize", "check", "--bundle", str(candidate))
        if check["usable"]:
            return candidate
        print(f"not using {candidate}: {check['reason']}", flush=True)
    if args.quick or args.digits_bundle:
        return None  # a smoke test does not train for minutes; an explicit bundle is not replaced
    run_dir = Path(DIGITS_BUNDLES[0]).parent
    print(f"training the digits recipe into {run_dir} for the int8 accuracy check", flush=True)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a stale run of this benchmark's own (other data)
    tracking = run_dir.parent / "mlruns.db"
    subprocess.run(
        [
            str(Path(PYTHON).parent / "mlfactory"),
            "train",
            "digits",
            "--out",
            str(run_dir),
            f"tracking.tracking_uri=sqlite:///{tracking}",
        ],
        check=True,
    )
    return Path(DIGITS_BUNDLES[0])


def wait_for_quiet(
    max_s: float, load_below: float | None, cores_below: float, poll_s: float
) -> dict[str, Any]:
    """Wait until the machine is quiet, or `max_s` passed.

    Quiet: the 1-min load average is below `load_below` (when given) and, measured over 5 s,
    fewer than `cores_below` cores are busy machine-wide. The second test is the one that
    matters on 2 cores: a load average of 1.4 can still be one process taking a whole core.
    """
    started = time.perf_counter()
    while True:
        load, busy = os.getloadavg()[0], busy_cores(5.0)
        quiet = busy < cores_below and (load_below is None or load < load_below)
        if quiet or time.perf_counter() - started >= max_s:
            break
        print(f"load average {load:.2f}, {busy:.2f} cores busy: waiting", flush=True)
        time.sleep(poll_s)
    return {
        "load_below": load_below,
        "cores_below": cores_below,
        "waited_s": round(time.perf_counter() - started),
        "load": round(load, 2),
        "busy_cores": round(busy, 3),
        "quiet": quiet,
    }


def quantization_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """int8 accuracy (trained digits bundle) and speed (resnet18) for each `--sweep` value."""
    try:
        digits = find_digits_bundle(args)
        if digits is None:
            result = {"error": "no digits bundle trained on today's data (none trained here)"}
        else:
            print("int8 sweep: accuracy on digits, speed on resnet18", flush=True)
            seconds = str(min(args.inprocess_seconds, 5.0))
            result = _python_module(
                "benchmarks.serving.quantize",
                "sweep",
                "--bundle",
                str(digits),
                "--cache",
                str(args.cache),
                "--float-convs",
                args.sweep,
                "--seconds",
                seconds,
            )
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        result = {"error": str(exc).splitlines()[0]}
    result["served_float_convs"] = args.float_convs
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet = None
    if args.wait_for_load:
        quiet = wait_for_quiet(args.wait_max, args.wait_for_load, args.quiet_cores, 60.0)
    waits: dict[str, Any] = {}

    def settle(phase: str) -> None:
        """Before each phase, if asked to: wait until no other process is busy."""
        if args.wait_for_load:
            waits[phase] = wait_for_quiet(args.wait_between, None, args.quiet_cores, 10.0)

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    args.out = args.out or args.cache / f"serving-{stamp}"
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.serving.run" + "".join(f" {a}" for a in sys.argv[1:])
    results: dict[str, Any] = {
        "command": command,
        "machine": report.machine_info(),
        "load_average": {
            "start": os.getloadavg()[0],
            "per_server": {},
            "wait": quiet,
            "waits": waits,
        },
        "settings": {
            "model": f"{artifacts.BACKBONE}, {artifacts.PREPROCESSING['crop_size']} px, random "
            f"init, {artifacts.NUM_LABELS} labels, fp32 ONNX from export_bundle",
            "load": "aiohttp closed loop from its own process, one JPEG (~500x375) per request",
            "concurrency": args.levels,
            "saturation": args.saturation,
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "warmup_s": args.warmup,
            "idle_s": args.idle,
            "litserve": {
                "max_batch_size": args.max_batch_size,
                "batch_timeout_s": args.batch_timeout,
            },
        },
        "servers": {},
    }
    print(f"load average {results['load_average']['start']:.2f}; building artifacts", flush=True)
    _python_module("benchmarks.serving.artifacts", "--cache", str(args.cache))
    want_int8 = "mlfactory-int8" in args.server_names
    if want_int8:
        _python_module(
            "benchmarks.serving.quantize",
            "resnet18",
            "--cache",
            str(args.cache),
            "--float-convs",
            str(args.float_convs),
        )
    bundles = server_bundles(args)
    variants = {"fp32": bundles["mlfactory"]}
    if want_int8:
        variants["int8"] = bundles["mlfactory-int8"]
    results["in_process"] = {}
    for variant, path in variants.items():
        settle(f"in-process {variant}")
        figures = in_process(path, args, args.inprocess_seconds)
        results["in_process"][variant] = figures
        print(
            f"in-process {variant}: limit {figures['limit_img_per_s']} img/s, single image "
            f"{figures['single_end_to_end_ms']} ms",
            flush=True,
        )
    commands = server_commands(args)
    for name in args.server_names:
        settle(name)
        results["load_average"]["per_server"][name] = os.getloadavg()[0]
        print(f"{name}:", flush=True)
        results["servers"][name] = bench_server(name, *commands[name], args)
    results["load_average"]["end"] = os.getloadavg()[0]
    if want_int8 and not args.no_accuracy:
        results["quantization"] = quantization_sweep(args)
    results["ratios"], results["targets"] = report.ratios_and_targets(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report.markdown(results)
    (args.out / "serving.md").write_text(text)
    print()
    print(text)
    print(f"results: {args.out / 'results.json'}; report: {args.out / 'serving.md'}")


if __name__ == "__main__":
    main()
