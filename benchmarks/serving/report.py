"""Ratios, targets and the markdown report of a serving benchmark run (no measuring here)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("onnxruntime", "torch", "torchvision", "fastapi", "uvicorn", "litserve", "aiohttp")
LABELS = {
    "mlfactory": "(b) mlfactory API, fp32",
    "mlfactory-int8": "(b8) mlfactory API, int8",
    "seed-torch": "(c) seed-style FastAPI + torch",
    "seed-torch-reload": "(c') seed 4's FastAPI + torch, checkpoint loaded per request",
    "litserve-ort": "(d) LitServe + ORT, batching",
    "litserve-torch": "(d') LitServe + torch, batching",
}


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory, versions, commit: what a figure needs to be compared."""
    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = _git("rev-parse", "--short", "HEAD")
    # Uncommitted changes in the served code mean the commit alone does not name what ran.
    serving_changes = _git("status", "--porcelain", "--", "src/mlfactory/serving")
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit or None,
        "serving_code_uncommitted": bool(serving_changes),
        "versions": versions,
    }


def _git(*arguments: str) -> str:
    done = subprocess.run(["git", *arguments], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or not bottom:
        return None
    return round(top / bottom, 3)


def saturation_rps(server: dict[str, Any] | None, level: int) -> float | None:
    if not server or "levels" not in server:
        return None
    run = server["levels"].get(str(level))
    return run["throughput_rps"] if run else None


def latency(server: dict[str, Any] | None, level: int, key: str) -> float | None:
    if not server or "levels" not in server:
        return None
    run = server["levels"].get(str(level))
    return run.get(key) if run else None


def limit_figures(results: dict[str, Any], server: str, variant: str) -> dict[str, Any]:
    """The in-process figures a server is compared with.

    When the in-process figures were re-measured beside the server (before its first level and
    after its last), the best of those two: the highest throughput and the lowest latency, so
    the server is held to its limit at its best. Otherwise the figures of the in-process phase.
    """
    entry = results["servers"].get(server) or {}
    pairs = [entry[key] for key in ("in_process_before", "in_process_after") if key in entry]
    if not pairs:
        figures: dict[str, Any] = results.get("in_process", {}).get(variant, {})
        return figures
    return {
        "limit_img_per_s": max(p["limit_img_per_s"] for p in pairs),
        "pipeline_img_per_s": max(p["pipeline_img_per_s"] for p in pairs),
        "single_end_to_end_ms": min(p["single_end_to_end_ms"] for p in pairs),
        "single_model_ms": min(p["single_model_ms"] for p in pairs),
    }


def ratios_and_targets(results: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ratios b/a, b/c, b/d and the issue's targets, measured vs required."""
    level = results["settings"]["saturation"]
    servers = results["servers"]
    b, b8 = (saturation_rps(servers.get(n), level) for n in ("mlfactory", "mlfactory-int8"))
    c = saturation_rps(servers.get("seed-torch"), level)
    c_reload = saturation_rps(servers.get("seed-torch-reload"), level)
    d_ort = saturation_rps(servers.get("litserve-ort"), level)
    d_torch = saturation_rps(servers.get("litserve-torch"), level)
    fp32 = limit_figures(results, "mlfactory", "fp32")
    int8 = limit_figures(results, "mlfactory-int8", "int8")
    a = fp32.get("limit_img_per_s")
    # The same work a request costs (JPEG decode + preprocess + model), in-process, no HTTP.
    a_e2e = fp32.get("pipeline_img_per_s")
    a8 = int8.get("limit_img_per_s")
    single = fp32.get("single_end_to_end_ms")
    p50_c1 = latency(servers.get("mlfactory"), 1, "p50_ms")
    ratios = {
        "b/a": _ratio(b, a),
        "b/a'": _ratio(b, a_e2e),
        "b/c": _ratio(b, c),
        "b/c'": _ratio(b, c_reload),
        "b/d(ORT)": _ratio(b, d_ort),
        "b/d(torch)": _ratio(b, d_torch),
        "b8/a8": _ratio(b8, a8),
        "b8/c": _ratio(b8, c),
        "p50(c=1)/in-process single": _ratio(p50_c1, single),
    }
    idle = servers.get("mlfactory", {}).get("idle_cpu_cores")
    quantization = results.get("quantization", {})
    served = str(quantization.get("served_float_convs"))
    drops = quantization.get("int8", {}).get(served, {}).get("accuracy_drop_points", {})
    drop, drop_unseen = drops.get("test"), drops.get("unseen")
    targets = [
        ("b/a (API vs bare ORT, model only)", ratios["b/a"], ">= 0.95", lambda v: v >= 0.95),
        (
            "b/a' (API vs in-process decode + model)",
            ratios["b/a'"],
            ">= 0.95",
            lambda v: v >= 0.95,
        ),
        ("b/d(ORT) (vs LitServe, same model)", ratios["b/d(ORT)"], ">= 1.0", lambda v: v >= 1.0),
        ("b/d(torch) (vs LitServe + torch)", ratios["b/d(torch)"], ">= 1.4", lambda v: v >= 1.4),
        ("b/c (vs seed, fp32)", ratios["b/c"], ">= 2", lambda v: v >= 2.0),
        (
            "p50 at c=1 / in-process single image",
            ratios["p50(c=1)/in-process single"],
            "<= 1.2",
            lambda v: v <= 1.2,
        ),
        ("idle CPU of the API (cores)", idle, "<= 0.01", lambda v: v <= 0.01),
        ("int8 accuracy drop, digits test split (points)", drop, "<= 1", lambda v: v <= 1.0),
        ("int8 accuracy drop, all unseen digits (points)", drop_unseen, "<= 1", lambda v: v <= 1.0),
        ("b8/c (int8 API vs seed)", ratios["b8/c"], ">= 3", lambda v: v >= 3.0),
    ]
    rows = [
        {
            "target": name,
            "measured": value,
            "required": required,
            "met": None if value is None else bool(check(value)),
        }
        for name, value, required, check in targets
    ]
    return ratios, rows


def _wait_line(wait: dict[str, Any] | None) -> list[str]:
    if not wait:
        return []
    state = "reached" if wait["quiet"] else "**not reached** (other processes were running)"
    return [
        f"Waited {wait['waited_s']} s for a load average below {wait['load_below']} and fewer "
        f"than {wait['cores_below']} busy cores: {state}; load {wait['load']:.2f}, "
        f"{wait['busy_cores']:.2f} cores busy when measuring began.",
        "",
    ]


def _noisy_phases_line(waits: dict[str, Any]) -> list[str]:
    if not waits:
        return []
    noisy = [
        f"{phase} ({wait['busy_cores']:.2f} cores busy)"
        for phase, wait in waits.items()
        if not wait["quiet"]
    ]
    if not noisy:
        return ["Before each phase the machine was quiet again (same test, busy cores only).", ""]
    return [f"Phases that began with other processes busy, after waiting: {', '.join(noisy)}.", ""]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The report block for docs/benchmarks.md (everything from `results`, nothing typed)."""
    machine, settings = results["machine"], results["settings"]
    level = settings["saturation"]
    low = [c for c in (1, 8) if c in settings["concurrency"]]
    loads = results["load_average"]
    lines = [
        f"Measured {machine['date_utc']} on {machine['nproc']} x {machine['cpu_model']} "
        f"(nproc {machine['nproc']}), Python {machine['python']}, commit "
        f"{machine['git_commit']}"
        + (
            " (src/mlfactory/serving with uncommitted changes)"
            if machine.get("serving_code_uncommitted")
            else ""
        )
        + "; "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
        "",
        f"1-min load average: {loads['start']:.2f} at the start, {loads['end']:.2f} at the end "
        f"(per server: {', '.join(f'{k} {v:.2f}' for k, v in loads['per_server'].items())}).",
        "",
        *_wait_line(loads.get("wait")),
        *_noisy_phases_line(loads.get("waits") or {}),
        "```",
        results["command"],
        "```",
        "",
        f"Model: {settings['model']}. Load: {settings['load']}. Each level runs "
        f"{settings['duration_s']:g} s or {settings['max_requests']} requests, whichever first.",
        "",
    ]
    header = f"| server | req/s at c={level} |"
    rule = "|---|---:|"
    for c in low:
        header += f" p50 c={c} (ms) | p99 c={c} (ms) |"
        rule += "---:|---:|"
    header += (
        f" errors | server CPU at c={level} (cores) | idle CPU (cores) "
        "| other processes' CPU, worst level (cores) |"
    )
    rule += "---:|---:|---:|---:|"
    lines += [header, rule]
    inproc = results.get("in_process", {})
    for name, variant in (
        ("bare ORT in-process, fp32", "fp32"),
        ("bare ORT in-process, int8", "int8"),
    ):
        figures = inproc.get(variant)
        if not figures:
            continue
        row = (
            f"| (a) {name}: best batch {figures['limit_batch_size']} | "
            f"{_fmt(figures['limit_img_per_s'])} img/s |"
        )
        row += f" {_fmt(figures['single_end_to_end_ms'])} (single image) | — |" if low else ""
        row += " — | — |" * (len(low) - 1)
        row += f" — | — | — | {_fmt(figures.get('other_cpu_cores'), 2)} |"
        lines.append(row)
        blank = " — | — |" * len(low) + " — | — | — | — |"
        lines.append(
            f"| (a') {name}, JPEG decode + preprocess + model, batches of 16 | "
            f"{_fmt(figures['pipeline_img_per_s'])} img/s |{blank}"
        )
    for name, server in results["servers"].items():
        label = LABELS.get(name, name)
        if "error" in server:
            lines.append(f"| {label} | failed: {server['error'].splitlines()[0]} |")
            continue
        runs = server["levels"]
        row = f"| {label} | {_fmt(saturation_rps(server, level))} |"
        for c in low:
            row += f" {_fmt(latency(server, c, 'p50_ms'))} | {_fmt(latency(server, c, 'p99_ms'))} |"
        errors = sum(run["errors"] for run in runs.values())
        cpu = runs.get(str(level), {}).get("server_cpu_cores")
        others = [run["other_cpu_cores"] for run in runs.values() if "other_cpu_cores" in run]
        row += f" {errors} | {_fmt(cpu, 2)} | {_fmt(server['idle_cpu_cores'], 3)} |"
        row += f" {_fmt(max(others) if others else None, 2)} |"
        lines.append(row)
    for variant in ("fp32", "int8"):
        figures = inproc.get(variant)
        if figures:
            batched = ", ".join(f"{k}: {v}" for k, v in figures["batched_img_per_s"].items())
            lines += [
                "",
                f"In-process {variant}: model-only single image {figures['single_model_ms']} ms, "
                f"decode + preprocess + model {figures['single_end_to_end_ms']} ms; batched "
                f"img/s by batch size {{{batched}}}; sequential decode + model in batches of 16 "
                f"{figures['pipeline_img_per_s']} img/s.",
            ]
    for server, variant in (("mlfactory", "fp32"), ("mlfactory-int8", "int8")):
        entry = results["servers"].get(server) or {}
        pairs = [entry[k] for k in ("in_process_before", "in_process_after") if k in entry]
        if pairs:
            shown = "; ".join(
                f"limit {p['limit_img_per_s']} img/s (batch {p['limit_batch_size']}), decode + "
                f"model {p['pipeline_img_per_s']} img/s, "
                f"single image {p['single_end_to_end_ms']} ms"
                for p in pairs
            )
            lines += [
                "",
                f"In-process {variant} re-measured beside {LABELS[server]}, before its first level "
                f"and after its last: {shown}. Its ratios use the best of these.",
            ]
    ratios, targets = results["ratios"], results["targets"]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v, 2)} |" for k, v in ratios.items()]
    lines += ["", "| target | measured | required | met |", "|---|---:|---|---|"]
    for row in targets:
        met = {True: "yes", False: "**no**", None: "not measured"}[row["met"]]
        lines.append(
            f"| {row['target']} | {_fmt(row['measured'], 3)} | {row['required']} | {met} |"
        )
    lines += _quantization_lines(results.get("quantization"))
    return "\n".join(lines) + "\n"


def _quantization_lines(quantization: dict[str, Any] | None) -> list[str]:
    if not quantization:
        return []
    if "error" in quantization:
        return ["", f"int8 accuracy: not measured ({quantization['error']})."]
    fp32, items = quantization["fp32"], quantization["items"]
    lines = [
        "",
        f"int8 (static QDQ) by number of leading convolutions kept in float. Accuracy of the "
        f"`digits` bundle ({quantization['backbone']}, calibrated on "
        f"{quantization['calibration_items']} train images) on its test split "
        f"({items['test']} items) and on every digit it never saw ({items['unseen']} items: the "
        f"test split plus those `max_per_class` left out); speed of resnet18 in-process, "
        f"batches of 16. fp32: accuracy {fp32['test']['accuracy']:.4f} (test), "
        f"{fp32['unseen']['accuracy']:.4f} (unseen); resnet18 "
        f"{quantization['resnet18_fp32_img_per_s']} img/s. The API's int8 bundle keeps "
        f"{quantization['served_float_convs']} in float.",
        "",
        "| float convs | accuracy test | drop (points) | accuracy unseen | drop (points) "
        "| resnet18 img/s | vs fp32 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count, row in quantization["int8"].items():
        speedup = _ratio(row["resnet18_img_per_s"], quantization["resnet18_fp32_img_per_s"])
        drops = row["accuracy_drop_points"]
        lines.append(
            f"| {count} | {row['test']['accuracy']:.4f} | {drops['test']} | "
            f"{row['unseen']['accuracy']:.4f} | {drops['unseen']} | "
            f"{row['resnet18_img_per_s']} | {_fmt(speedup, 2)}x |"
        )
    return lines
