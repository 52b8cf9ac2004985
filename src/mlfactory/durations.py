"""Durations written as a number and a unit: `90s`, `30m`, `6h`, `2d`, `1w`.

One parser for every place that takes one (`mlfactory monitor --since`, the server's
`MLFACTORY_LOG_RETENTION`), so they all read the same way.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$")  # ASCII digits only
# Longer than any log is kept, and short enough that now minus it is still a date.
LONGEST = timedelta(weeks=5218)  # 100 years
HOW_TO_WRITE = "use a number above 0 and a unit (s, m, h, d or w), e.g. 30m, 6h, 2d; at most 5218w"


def parse_duration(text: str) -> timedelta | None:
    """A positive duration such as `90s`, `30m`, `6h`, `2d` or `1w`, at most LONGEST; None when
    `text` is not one."""
    match = DURATION_RE.match(text)
    if match is None:
        return None
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if not 0 < seconds <= LONGEST.total_seconds():
        return None
    return timedelta(seconds=seconds)
