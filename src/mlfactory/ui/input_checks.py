"""What the Predict page checks before it sends anything: what the API would refuse.

The server's limits come with `GET /v1/model` (`limits`: `max_files`, `max_text_chars`,
`max_upload_bytes`, `max_request_bytes`); an older server sends none, and the API checks alone.
Each check answers with one sentence that names the input and the limit, or None.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from mlfactory.modalities.base import Modality
from mlfactory.serving.settings import MEGABYTE  # a MiB: 1024 * 1024 bytes

# Streamlit's uploader counts a "MB" as 10**6 bytes (1024 * 1024 in a browser on Windows).
UPLOADER_MB = 1_000_000
# The most over-long lines a message names; it counts the others.
NAMED_LINES = 5


@dataclass
class SentInput:
    """One input as sent to the API, kept to show it beside its prediction."""

    name: str
    data: bytes
    media_type: str


def texts_to_send(text: str, per_line: bool) -> list[SentInput]:
    """The text field's input: the whole of it, or each line that is not blank (named by its
    line number); nothing when it is blank."""
    if not per_line:
        return [SentInput("text", text.encode(), "text/plain")] if text.strip() else []
    lines = enumerate(text.splitlines(), start=1)
    return [
        SentInput(f"line {n}", line.encode(), "text/plain") for n, line in lines if line.strip()
    ]


def readable_files(sent: list[SentInput], modality: Modality) -> tuple[list[SentInput], list[str]]:
    """The files the model can read, checked with the decoder the server uses
    (`Modality.check_file`), and a note on each one it cannot: one unreadable file would make
    the API refuse the whole request."""
    readable: list[SentInput] = []
    notes: list[str] = []
    for item in sent:
        reason = modality.check_file(item.data)
        if reason is None:
            readable.append(item)
        else:
            notes.append(f"{item.name} is left out: {reason}")
    return readable, notes


def over_the_limits(
    sent: list[SentInput], limits: dict[str, int], kind: str = "files"
) -> str | None:
    """Why the API would refuse these inputs, said before they are sent; None if it would not.

    Args:
        sent: the files, or texts, of one request.
        limits: what `GET /v1/model` says one request may hold.
        kind: "files" (their number and bytes) or "texts" (their number, characters and the
            JSON body's bytes).
    """
    most = limits.get("max_files")
    if most is not None and len(sent) > most:
        chosen = "files chosen" if kind == "files" else "texts"
        return f"{len(sent)} {chosen}: the API takes at most {most} a request"
    if kind == "texts":
        return _too_long(sent, limits.get("max_text_chars")) or _too_large_body(
            "the texts come to", _json_bytes(sent), limits.get("max_request_bytes")
        )
    largest = limits.get("max_upload_bytes")
    for item in sent:
        if largest is not None and len(item.data) > largest:
            return (
                f"{item.name} is {len(item.data):,} bytes: the API takes files of at most "
                f"{size_text(largest)}"
            )
    total = sum(len(item.data) for item in sent)
    return _too_large_body("the files come to", total, limits.get("max_request_bytes"))


def size_text(size: int) -> str:
    """`10,485,760 bytes (10 MiB)`: exact, and in MiB (1024 * 1024 bytes)."""
    return f"{size:,} bytes ({size / MEGABYTE:.3g} MiB)"


def uploader_megabytes(largest: int | None) -> int | None:
    """The uploader's limit (`max_upload_size`, in Streamlit's MB of 10**6 bytes): the
    server's `largest` bytes rounded up, so that it refuses nothing the server takes (the exact
    limit is checked before sending); None (Streamlit's default) without one."""
    return math.ceil(largest / UPLOADER_MB) if largest else None


def _too_long(sent: list[SentInput], longest: int | None) -> str | None:
    """The texts longer than the API takes, by name (`line 3 has 60 characters`)."""
    if longest is None:
        return None
    over = [(item.name, len(item.data.decode())) for item in sent]
    over = [(name, chars) for name, chars in over if chars > longest]
    if not over:
        return None
    named = ", ".join(f"{name} has {chars:,} characters" for name, chars in over[:NAMED_LINES])
    more = f" (and {len(over) - NAMED_LINES} more)" if len(over) > NAMED_LINES else ""
    return f"{named}{more}: the API takes texts of at most {longest:,} characters"


def _too_large_body(what: str, total: int, body: int | None) -> str | None:
    if body is None or total <= body:
        return None
    return f"{what} {total:,} bytes: the API takes at most {body:,} a request"


def _json_bytes(sent: list[SentInput]) -> int:
    """The bytes of the request's JSON body, encoded as `httpx` sends it."""
    texts = [item.data.decode() for item in sent]
    body = json.dumps({"texts": texts}, ensure_ascii=False, separators=(",", ":"))
    return len(body.encode())


def limits_text(limits: dict[str, int], kind: str) -> str | None:
    """What one request may hold, as the page states it under its input; None without limits
    (an older server)."""
    most, longest = limits.get("max_files"), limits.get("max_text_chars")
    largest = limits.get("max_upload_bytes")
    if kind == "texts":
        each = f", each of at most {longest:,} characters" if longest else ""
        many = f"up to {most:,} texts a request" if most else "texts"
    else:
        each = f", each of at most {size_text(largest)}" if largest else ""
        many = f"up to {most:,} files a request" if most else "files"
    return f"The API takes {many}{each}." if most or each else None
