"""The demo's live traffic: held-out images sent to the served bundle with their true labels
sent back, then the same images inverted (a real shift), each window checked as
`mlfactory monitor` checks it.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageOps
from rich.text import Text

from mlfactory.data.dataset import Item
from mlfactory.demo_places import shown_path
from mlfactory.monitor_command import STATUS_STYLES, accuracy_line, monitor_bundle
from mlfactory.monitoring.flagged import flagged_text
from mlfactory.monitoring.report import DriftReport

FILES_PER_REQUEST = 16


@dataclass
class Traffic:
    """One stream of requests: what was sent and what the server answered."""

    items: list[Item]
    predictions: list[dict[str, Any]]
    # (request id, input index) -> the file's path (relative to the current folder when inside
    # it): where a client finds a logged input again
    files: dict[tuple[str, int], str]


def in_arrival_order(items: list[Item], seed: int) -> list[Item]:
    """`items` shuffled (seeded), as live traffic arrives: mixed, not one label after another.
    Sent in the split's order, sorted by label, every span of the report's history would be a
    label-prior shift of its own, and its drift chart would light up before any real shift."""
    return random.Random(seed).sample(items, len(items))


def send(server_url: str, items: list[Item], stream: str, invert: bool = False) -> Traffic:
    """POST `items` (inverted when `invert`) to `/v1/predict` in requests of a few files, and
    each request's true labels to `/v1/feedback`. The requests carry their own ids
    (`X-Request-ID`: `held-out-0003`, the stream's name and the request's number), as a client
    that wants to find its inputs in the monitoring report would send.

    Raises:
        httpx.HTTPStatusError: the server refused a request.
    """
    predictions: list[dict[str, Any]] = []
    names: dict[tuple[str, int], str] = {}
    for start in range(0, len(items), FILES_PER_REQUEST):
        batch = items[start : start + FILES_PER_REQUEST]
        files = [
            (
                "files",
                (
                    Path(i.path or "x").name,
                    inverted_png(i.read_bytes()) if invert else i.read_bytes(),
                ),
            )
            for i in batch
        ]
        request_id = f"{stream}-{start // FILES_PER_REQUEST:04d}"
        answer = httpx.post(
            f"{server_url}/v1/predict",
            files=files,
            headers={"X-Request-ID": request_id},
            timeout=60.0,
        )
        answer.raise_for_status()
        body = answer.json()
        predictions += body["predictions"]
        for index, item in enumerate(batch):
            names[(body["request_id"], index)] = shown_path(Path(item.path or "?"))
        labels = [
            {"request_id": body["request_id"], "input_index": index, "label": item.label}
            for index, item in enumerate(batch)
        ]
        httpx.post(f"{server_url}/v1/feedback", json=labels, timeout=60.0).raise_for_status()
    return Traffic(items, predictions, names)


def check(bundle_path: Path, log_url: str, traffic: Traffic) -> DriftReport:
    """The `mlfactory monitor` report of the log's latest predictions: this traffic's."""
    return monitor_bundle(str(bundle_path), log_url, last=len(traffic.items)).report


def summary(title: str, report: DriftReport, traffic: Traffic) -> Text:
    """`title: VERDICT; OOD share`, the drifted checks, the accuracy estimate and the live
    accuracy on lines of their own (each fits 80 columns), then the most out-of-distribution
    input, if any, with the file it came from."""
    line = Text(f"  {title}: ")
    line.append(report.status.upper(), style=STATUS_STYLES.get(report.status, ""))
    if report.ood_fraction is not None:
        line.append(f"; out of distribution {report.ood_fraction:.0%}")
    drifted = [check.name for check in report.checks if check.drift]
    if drifted:
        line.append(f"\n    drifted: {', '.join(drifted)}")
    for part in accuracy_line(report).split("; "):
        line.append("\n    " + part.replace(" (mean", "\n      (mean"))
    if report.flagged:
        top = report.flagged[0]
        line.append(f"\n    most out of distribution:\n      {flagged_text(top)}")
        path = traffic.files.get((top.request_id, top.input_index))
        if path:
            line.append(f"\n      the file {path}")
    return line


def inverted_png(data: bytes) -> bytes:
    """An image's bytes as a grey PNG with its brightness inverted: a real, foreign input."""
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        ImageOps.invert(image.convert("L")).save(out, format="PNG")
    return out.getvalue()
