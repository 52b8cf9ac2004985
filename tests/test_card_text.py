"""The model card's values as text (the HTML card and the web UI's page)."""

from __future__ import annotations

from mlfactory.card_text import number, ood_rate


def test_numbers_have_four_significant_digits_and_a_dash_for_none() -> None:
    assert number(0.95555) == "0.9556" and number(7.70123) == "7.701" and number(180) == "180"
    assert number(None) == "-" and number("0.9") == "-"


def test_the_ood_rate_is_the_one_the_threshold_gives() -> None:
    asked = {"ood_false_positive_rate": 0.01}
    assert ood_rate({**asked, "ood_expected_rate": 0.01}) == "false-positive rate 0.01"
    # 49 held-out inputs: the threshold is their largest score, exceeded 1 time in 50
    assert ood_rate({**asked, "ood_expected_rate": 1 / 50}) == (
        "false-positive rate 0.02: too few held-out inputs for 0.01"
    )
    # where this profile's own rate lies, 9 times in 10 (profiles written since it is stored)
    ranged = {**asked, "ood_expected_rate": 0.01, "ood_rate_low": 0.00066, "ood_rate_high": 0.028}
    assert ood_rate(ranged) == (
        "false-positive rate 0.01; for this profile 0.00066 to 0.028 (90% chance)"
    )
    assert ood_rate(asked) == "false-positive rate 0.01"  # a profile from before it was stored
    assert ood_rate({}) == "false-positive rate -"
