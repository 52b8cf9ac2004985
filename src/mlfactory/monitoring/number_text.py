"""Statistics and p-values as text for people: the terminal table, the HTML report, the web UI
(plain Python: the UI imports it without numpy or scipy)."""

from __future__ import annotations


def number_text(value: float | None, missing: str = "-") -> str:
    """A statistic or p-value for people: 3 significant digits, `missing` for None."""
    if value is None:
        return missing
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def p_value_text(value: float | None, missing: str = "-") -> str:
    """`number_text` of a p-value, except that 0 reads "< 1e-300": a test's p-value is never 0,
    but one below the smallest float (about 2e-308: a KS or chi-square test of a window far from
    its reference, of thousands of rows) is 0.0 in floating point, and in the JSON."""
    return "< 1e-300" if value == 0 else number_text(value, missing)
