"""Moments as the pages show them (`mlfactory.times`)."""

from __future__ import annotations

import pytest

from mlfactory.times import export_time, utc_time


def test_times_read_as_the_cli_prints_them() -> None:
    """To the second in UTC, whatever zone was written; a time without a zone is UTC."""
    assert utc_time("2026-12-04T06:30:06.9+01:00") == "2026-12-04 05:30:06"
    assert utc_time("2026-12-04T05:30:04") == "2026-12-04 05:30:04"
    with pytest.raises(ValueError):
        utc_time("yesterday")


def test_an_export_time_that_is_not_iso_shows_as_written() -> None:
    assert export_time("2026-12-04T05:29:59+00:00") == "2026-12-04 05:29:59 UTC"
    assert export_time("last Tuesday") == "last Tuesday"  # a bundle.json written by hand
    assert export_time(None) == export_time("") == "at an unknown time"
