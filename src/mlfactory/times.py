"""Moments as people read them: to the second, in UTC, as `mlfactory monitor` prints them.

The API, bundles and reports write ISO 8601 times; the web UI's pages and the HTML model card
show them this way.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_time(iso: str) -> str:
    """An ISO 8601 time (a time without a zone is UTC, as the prediction log writes it) as
    `2026-12-04 05:30:04`.

    Raises:
        ValueError: `iso` is not an ISO 8601 time.
    """
    moment = datetime.fromisoformat(iso)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def export_time(created_at: str | None) -> str:
    """When a bundle was exported (its `created_at`), for its model card."""
    if not created_at:
        return "at an unknown time"
    try:
        return f"{utc_time(created_at)} UTC"
    except ValueError:  # not ISO 8601: a bundle written by hand
        return created_at
