"""How far a block of code raised this process's peak memory (resident set), on Linux.

Writing 5 to `/proc/self/clear_refs` resets the kernel's high-water mark (`VmHWM`) to the
current RSS, so the peak of one call can be read after it even in a long-lived process. Pillow
and libsndfile allocate outside Python's allocator, where `tracemalloc` cannot see them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
MIB = 1024 * 1024


def available() -> bool:
    """Whether the kernel lets this process reset and read its peak RSS."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return STATUS.is_file()


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in {STATUS}")


@dataclass
class PeakGrowth:
    """Bytes by which the peak RSS rose above the RSS at the start (set when the block ends);
    `measured` is False where the kernel does not allow the measurement (bytes stays 0)."""

    bytes: int = 0
    measured: bool = False

    @property
    def mib(self) -> float:
        return self.bytes / MIB


@contextmanager
def peak_rss_growth() -> Iterator[PeakGrowth]:
    """Measure the peak RSS of the block, above the RSS when it started (Linux)."""
    growth = PeakGrowth()
    if not available():
        yield growth
        return
    start = _status_kib("VmRSS")
    try:
        yield growth
    finally:
        growth.bytes = max(0, _status_kib("VmHWM") - start) * 1024
        growth.measured = True
