from datetime import timedelta

import pytest

from mlfactory.durations import LONGEST, parse_duration


def test_a_number_and_a_unit_is_a_duration() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration(" 1.5h ") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("5218w") == LONGEST


@pytest.mark.parametrize(
    "text",
    ["", "30", "1 day", "-1d", "0s", "5219w", "2000000d", "99999999999999999999s", "\u0663h"],
)
def test_anything_else_is_none(text: str) -> None:
    assert parse_duration(text) is None


def test_the_longest_duration_still_leaves_a_date() -> None:
    from datetime import UTC, datetime

    assert (datetime.now(UTC) - LONGEST).year > 1900
