"""Request ids: what a client may choose as one, and how the server makes its own.

Every request gets an id (`middleware.RequestContextMiddleware`): the client's `X-Request-ID`
when it is a token as the server makes them (`VALID_REQUEST_ID`: 1 to 64 letters, digits, `.`,
`_`, `:` or `-`), else a new random one. A header that is too long, empty or holds any other
character (a space, a quote, a NUL, a line break, a non-ASCII byte) is ignored, not refused:
the request gets a new id. The id keys the request's predictions in the prediction log and
`POST /v1/feedback`'s labels, so a chosen id that a logged prediction already has is replaced
as its rows are committed (`taken_ids`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

from mlfactory.serving.log_tables import MAX_REQUEST_ID_CHARS

REQUEST_ID_HEADER = "x-request-id"
# What a request id may be: the client's own `X-Request-ID` and `POST /v1/feedback`'s
# `request_id` must match it.
VALID_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_CHARS}}}")


def check_request_id(value: str) -> str:
    """`value` when it is a request id as the server makes them (`VALID_REQUEST_ID`).

    Raises:
        ValueError: it is not (e.g. a NUL character, which PostgreSQL refuses to store).
    """
    if not VALID_REQUEST_ID.fullmatch(value):
        raise ValueError(
            f"must be 1 to {MAX_REQUEST_ID_CHARS} letters, digits, '.', '_', ':' or '-' "
            "(a request id)"
        )
    return value


# A request id in a request body (`POST /v1/feedback`): refused unless the server could have
# made it, with a message that says what a request id is.
RequestId = Annotated[
    str,
    AfterValidator(check_request_id),
    WithJsonSchema({"type": "string", "pattern": f"^{VALID_REQUEST_ID.pattern}$"}),
]


def client_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The client's (first) `X-Request-ID` if it is a valid token (`VALID_REQUEST_ID`), else
    None: a header that is too long or holds other characters is ignored."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            return candidate if VALID_REQUEST_ID.fullmatch(candidate) else None
    return None


def new_request_id() -> str:
    """A new random request id (32 hexadecimal digits)."""
    return uuid.uuid4().hex


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if it is a valid token, else a new random id."""
    return client_request_id(headers) or new_request_id()
