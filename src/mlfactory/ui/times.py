"""Times as the pages show them: to the second, in UTC, as `mlfactory monitor` prints them."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_time(iso: str) -> str:
    """An ISO 8601 time of the API (a time without a zone is UTC, as the log writes it) as
    `2026-12-04 05:30:04`."""
    moment = datetime.fromisoformat(iso)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}"
