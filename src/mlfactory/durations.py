"""Durations written as a number and a unit: `90s`, `30m`, `6h`, `2d`, `1w`.

One parser for every place that takes one (`mlfactory monitor --since`, the server's
`MLFACTORY_LOG_RETENTION`), so they all read the same way.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
HOW_TO_WRITE = "use a number and a unit (s, m, h, d or w), e.g. 30m, 6h, 2d"


def parse_duration(text: str) -> timedelta | None:
    """A positive duration such as `90s`, `30m`, `6h`, `2d` or `1w`; None when `text` is not one."""
    match = DURATION_RE.match(text)
    if match is None or float(match.group(1)) <= 0:
        return None
    return timedelta(seconds=float(match.group(1)) * UNITS[match.group(2)])
