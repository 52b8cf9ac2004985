"""Read request bodies with bounded memory: limits are checked before and while bytes arrive.

Multipart bodies are parsed as they stream in (python-multipart), so a file over the size limit
or one file too many is refused as soon as it shows up, never after buffering the whole body.
"""

from __future__ import annotations

import json
import logging
import re
from codecs import BOM_UTF8
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.utils import decode_rfc2231
from typing import Any
from urllib.parse import unquote

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import (
    DEFAULT_MAX_HEADER_SIZE,
    MultipartParser,
    parse_options_header,
)
from starlette.requests import Request

from mlfactory.errors import InputError
from mlfactory.serving.schemas import FILES_FIELD
from mlfactory.serving.settings import MAX_FILES_LIMIT, ServingSettings

# python-multipart logs each malformed body as a warning of its own, with no request to tie it
# to; the client gets the reason in its 422, and the access log has the request.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

MULTIPART = "multipart/form-data"
MAX_FILENAME_SHOWN = 80
# Parts of any field in one body (Starlette's default for forms): thousands of tiny form
# fields fit in the body limit, and each one costs parsing. MLFACTORY_MAX_FILES goes up to it.
MAX_PARTS = MAX_FILES_LIMIT
EXTENDED_FILENAME = re.compile(r"(?i)(?:^|;)\s*filename\*\s*=\s*([^;]*)")


@dataclass
class Upload:
    """One uploaded file."""

    index: int
    filename: str
    data: bytes

    def describe(self) -> str:
        """How error messages name this file, e.g. `file 2 ('seven.png')`."""
        name = self.filename
        if len(name) > MAX_FILENAME_SHOWN:
            name = name[: MAX_FILENAME_SHOWN - 3] + "..."
        return f"file {self.index} ({name!r})"


def media_type(content_type: str | None) -> str:
    """The lower-cased media type of a Content-Type header, without parameters."""
    return parse_options_header(content_type or "")[0].decode("latin-1").lower()


def check_json_type(content_type: str | None, example: str, empty: bool = False) -> None:
    """Refuse a body declared as anything but JSON (415), naming the body to send instead.

    A missing Content-Type is refused too. A browser posts `text/plain`, or a `Blob` body with
    no Content-Type at all, to another site without asking it first (a CORS "simple request");
    `application/json` needs the site's consent (a preflight), so requiring it keeps web pages
    from posting here. Only an `empty` body may come without one (`POST /v1/admin/reload`
    with no body reloads the bundle being served).
    """
    kind = media_type(content_type)
    if not kind and empty:
        return
    if not kind:
        raise InputError(
            f"no Content-Type header: send Content-Type: application/json and a body like "
            f"{example}",
            415,
        )
    if kind != "application/json" and not kind.endswith("+json"):
        raise InputError(
            f"unsupported content type '{kind}': send application/json like {example}", 415
        )


def declares_no_body(headers: Mapping[str, str]) -> bool:
    """The request says it has no body: no Transfer-Encoding, and no or a zero Content-Length."""
    length = headers.get("content-length", "0").strip()
    return "transfer-encoding" not in headers and length == "0"


def check_body_headers(headers: Mapping[str, str], limit: int) -> None:
    """Refuse a compressed body (415: the limits count the bytes the model gets) and one
    whose declared length is over `limit` (413), before reading any of it."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise InputError(
            f"Content-Encoding '{encoding}' is not supported: send the body uncompressed", 415
        )
    check_content_length(headers.get("content-length"), limit)


def check_content_length(header: str | None, limit: int) -> None:
    """Refuse a body whose declared length is over `limit` before reading any of it."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise InputError(f"invalid Content-Length header: {header!r}", 400) from None
    if declared > limit:
        raise InputError(
            f"request body too large: {declared} bytes exceeds the limit of {limit} bytes", 413
        )


async def read_json_body(request: Request, limit: int, example: str) -> bytes:
    """The body of a JSON request without a UTF-8 byte order mark (which JSON parsers may
    ignore, RFC 8259): a body declared as other than JSON is refused (415), and one over
    `limit` bytes (413) as soon as its Content-Length or its bytes say so."""
    check_json_type(request.headers.get("content-type"), example, declares_no_body(request.headers))
    check_body_headers(request.headers, limit)
    body = (await read_body(request.stream(), limit)).removeprefix(BOM_UTF8)
    encoding = json.detect_encoding(body)  # RFC 4627's rule: the NUL bytes of its first four
    if encoding != "utf-8":  # UTF-16 or UTF-32, with or without a byte order mark
        name = encoding[:6].upper()
        raise InputError(f"invalid JSON body: it is {name} text; send UTF-8 like {example}", 422)
    return body


async def read_body(stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refusing it (413) as soon as more than `limit` bytes have arrived."""
    body = bytearray()
    async for chunk in stream:
        body.extend(chunk)
        if len(body) > limit:
            raise InputError(f"request body too large: exceeds the limit of {limit} bytes", 413)
    return bytes(body)


async def read_uploads(
    content_type: str | None, stream: AsyncIterator[bytes], settings: ServingSettings
) -> list[Upload]:
    """Stream a multipart body and return the files of its `files` field, in order.

    Raises:
        InputError: not multipart (415), malformed (422), no `files` (422), a file over
            `max_upload_bytes`, more than `max_files` files or `MAX_PARTS` parts, or a body
            over `max_request_bytes` (413).
    """
    kind = media_type(content_type)
    if not kind:
        raise InputError(_no_files_message([]), 422)
    if kind != MULTIPART:
        raise InputError(
            f"unsupported content type '{kind}': send files as {MULTIPART} "
            f"in the form field '{FILES_FIELD}'",
            415,
        )
    boundary = parse_options_header(content_type or "")[1].get(b"boundary")
    if not boundary:
        raise InputError(f"malformed {MULTIPART} body: the Content-Type has no boundary", 422)
    collector = _PartCollector(settings)
    start = b""  # the body's first bytes, to say why a body that does not begin right fails
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        received = 0
        async for chunk in stream:
            start += chunk[: len(boundary) + 2 - len(start)]
            received += len(chunk)
            if received > settings.max_request_bytes:
                raise InputError(
                    "request body too large: exceeds the limit of "
                    f"{settings.max_request_bytes} bytes",
                    413,
                )
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        reason = str(exc)
        if not (b"--" + boundary).startswith(start):
            reason = (
                f"it does not begin with the boundary '--{boundary.decode('latin-1')}' of its "
                "Content-Type (nothing may come before the first part)"
            )
        elif reason == "Maximum header size exceeded":
            reason = (
                f"a part's header line is over {DEFAULT_MAX_HEADER_SIZE} bytes (a file name "
                "that long?): shorten it"
            )
        raise InputError(f"malformed {MULTIPART} body: {reason}", 422) from None
    if not collector.ended:
        raise InputError(f"malformed {MULTIPART} body: it ends before its closing boundary", 422)
    if not collector.files:
        raise InputError(_no_files_message(collector.other_fields), 422)
    return collector.files


def _no_files_message(other_fields: list[str]) -> str:
    message = f"no files: send one or more files in the {MULTIPART} field '{FILES_FIELD}'"
    if other_fields:
        names = ", ".join(repr(name) for name in dict.fromkeys(other_fields))
        message += f" (the request had only the field(s) {names})"
    return message


@dataclass
class _PartCollector:
    """python-multipart callbacks that keep the `files` parts and enforce the limits."""

    settings: ServingSettings
    files: list[Upload] = field(default_factory=list)
    other_fields: list[str] = field(default_factory=list)
    ended: bool = False
    parts: int = 0
    _header_name: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)
    _disposition: bytes = b""
    _current: Upload | None = None
    _buffer: bytearray = field(default_factory=bytearray)

    def callbacks(self) -> Any:  # python-multipart's MultipartCallbacks TypedDict
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._disposition, self._current = b"", None
        self._buffer = bytearray()
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InputError(f"too many form fields: at most {MAX_PARTS} parts per request", 413)

    def _on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        options = parse_options_header(self._disposition)[1]
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name != FILES_FIELD:
            self.other_fields.append(name)
            return
        filename = _filename(options, self._disposition)
        if filename is None:
            raise InputError(
                f"field '{FILES_FIELD}' must hold file uploads, not plain form values", 422
            )
        index = len(self.files)
        if index >= self.settings.max_files:
            raise InputError(f"too many files: at most {self.settings.max_files} per request", 413)
        self._current = Upload(index=index, filename=filename, data=b"")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:  # parts of other fields are dropped unread
            return
        self._buffer.extend(data[start:end])
        if len(self._buffer) > self.settings.max_upload_bytes:
            raise InputError(
                f"{self._current.describe()}: file too large: exceeds the limit of "
                f"{self.settings.max_upload_bytes} bytes",
                413,
            )

    def _on_part_end(self) -> None:
        upload, self._current = self._current, None
        if upload is None:
            return
        # Browsers send an empty, unnamed part when no file was chosen: that is "no file".
        if not upload.filename and not self._buffer:
            return
        upload.data = bytes(self._buffer)
        self.files.append(upload)

    def _on_end(self) -> None:
        self.ended = True


def _filename(options: dict[bytes, bytes], disposition: bytes) -> str | None:
    """The part's file name, or None for a plain form value. A name sent only as RFC 5987's
    `filename*=UTF-8''%E2%9C%93.png` (which RFC 7578 forbids, but some clients send for names
    beyond ASCII, and python-multipart drops) is a file too."""
    if b"filename" in options:
        return options[b"filename"].decode("utf-8", "replace")
    extended = EXTENDED_FILENAME.search(disposition.decode("latin-1"))
    if extended is None:
        return None
    charset, _, encoded = decode_rfc2231(extended.group(1).strip().strip('"'))
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return unquote(encoded, encoding="utf-8", errors="replace")
