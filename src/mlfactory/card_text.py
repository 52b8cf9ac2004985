"""The model card's values as text, shared by the HTML card (`mlfactory report`) and the web
UI's card page (which imports nothing heavier)."""

from __future__ import annotations

from typing import Any


def number(value: Any) -> str:
    """A number with four significant digits, or "-" where there is none."""
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def ood_rate(profile: dict[str, Any]) -> str:
    """The OOD threshold's false-positive rate (the one it gives, when too few held-out inputs
    kept it from the rate asked for: 1 / (n + 1) with n of them), and where this profile's own
    rate lies 9 times in 10 (profiles from before it was stored have no range)."""
    asked, expected = profile.get("ood_false_positive_rate"), profile.get("ood_expected_rate")
    if isinstance(asked, float) and isinstance(expected, float) and expected > asked:
        text = f"false-positive rate {expected:.2g}: too few held-out inputs for {asked:.2g}"
    else:
        text = f"false-positive rate {number(asked)}"
    low, high = profile.get("ood_rate_low"), profile.get("ood_rate_high")
    if isinstance(low, float) and isinstance(high, float):
        text += f"; for this profile {low:.2g} to {high:.2g} (90% chance)"
    return text
