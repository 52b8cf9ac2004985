"""One sentence for a client from pydantic's validation errors of a request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The JSON parser's words for a `\uD800`-`\uDBFF` escape that ends the string, where the low
# half of the pair must follow (what a UTF-16 string cut in two produces).
_HALF_PAIR = "unexpected end of hex escape"
_HALF_PAIR_PLAINLY = (
    "a lone surrogate: a \\uD800-\\uDBFF escape must be followed by a \\uDC00-\\uDFFF one"
)


def describe_errors(errors: Sequence[Any]) -> str:
    """One sentence from pydantic/FastAPI validation errors (first error, plus a count)."""
    if not errors:
        return "the request is invalid"
    first = errors[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = _message(first)
    sentence = f"{location}: {message}" if location else message
    if len(errors) > 1:
        sentence += f" (and {len(errors) - 1} more problem(s))"
    return sentence


def _message(error: Any) -> str:
    """pydantic's message, in the client's terms where it names the parser's internals."""
    if error.get("type") == "int_parsing_size":  # its message: "exceeded maximum size"
        return "the number is too large for an integer"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return message.replace(_HALF_PAIR, _HALF_PAIR_PLAINLY)
