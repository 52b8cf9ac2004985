"""Small inline SVG charts for the monitoring report: no plotting library, no network.

Three shapes cover the report: two overlaid histograms (reference against window), grouped bars
(category shares), and lines over time (with an optional interval band and a reference line).
Every function returns one `<svg>` element as a string, sized in CSS pixels; text is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

WIDTH, HEIGHT = 360, 180
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 10, 24, 34
LEGEND_Y = 4
REFERENCE_COLOR = "#4c72b0"
WINDOW_COLOR = "#dd8452"
MAX_BARS = 20


@dataclass(frozen=True)
class Series:
    """One line of a time chart.

    Attributes:
        name: the legend text.
        values: (N,) y values; NaN leaves a gap.
        color: a CSS colour.
        low: (N,) lower end of an interval band, or None.
        high: (N,) upper end of the band, or None.
        dashed: draw the line dashed.
    """

    name: str
    values: Sequence[float]
    color: str
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    dashed: bool = False


class _Frame:
    """Maps data coordinates to the plot area of one chart."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1.0
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1.0
        self.left, self.right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
        self.top, self.bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def axes(self, labels: Callable[[Sequence[float]], list[str]] | None = None) -> list[str]:
        """The two axis lines and three y labels (bottom, middle, top), as percentages unless
        `labels` writes them."""
        parts = [
            f'<line x1="{self.left}" y1="{self.bottom}" x2="{self.right}" y2="{self.bottom}" '
            'stroke="#888"/>',
            f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{self.bottom}" '
            'stroke="#888"/>',
        ]
        values = (self.y0, (self.y0 + self.y1) / 2, self.y1)
        for value, label in zip(values, (labels or percentages)(values), strict=True):
            parts.append(
                f'<text x="{self.left - 4}" y="{self.y(value) + 3:.1f}" text-anchor="end">'
                f"{escape(label)}</text>"
            )
        return parts


def percentages(values: Sequence[float], most_decimals: int = 3) -> list[str]:
    """`values` as percentages with the fewest decimals that tell them apart: an axis up to
    1.1 % reads 0.0%, 0.5%, 1.1%, not 0%, 1%, 1%. Equal values get whole percentages."""
    decimals = 0
    if len(set(values)) == len(values):
        while decimals < most_decimals:
            if len({f"{value:.{decimals}%}" for value in values}) == len(values):
                break
            decimals += 1
    return [f"{value:.{decimals}%}" for value in values]


def histograms(
    edges: np.ndarray, reference: np.ndarray, window: np.ndarray, x_format: str = "{:.3g}"
) -> str:
    """Two densities over the same bins, drawn as outlined step areas.

    Args:
        edges: (B + 1,) bin edges.
        reference: (B,) the reference's share of values per bin.
        window: (B,) the window's share per bin.
        x_format: how the x axis's end values are written.
    """
    top = float(max(np.max(reference, initial=0.0), np.max(window, initial=0.0), 1e-9))
    frame = _Frame(float(edges[0]), float(edges[-1]), 0.0, share_axis_top(top))
    parts = frame.axes()
    for shares, color in ((reference, REFERENCE_COLOR), (window, WINDOW_COLOR)):
        points = [f"{frame.x(float(edges[0])):.1f},{frame.y(0.0):.1f}"]
        for i, share in enumerate(shares):
            y = frame.y(float(share))
            points += [f"{frame.x(float(edges[i])):.1f},{y:.1f}"]
            points += [f"{frame.x(float(edges[i + 1])):.1f},{y:.1f}"]
        points.append(f"{frame.x(float(edges[-1])):.1f},{frame.y(0.0):.1f}")
        parts.append(
            f'<polygon points="{" ".join(points)}" fill="{color}" fill-opacity="0.25" '
            f'stroke="{color}" stroke-width="1.5"/>'
        )
    parts += _x_ends(frame, x_format.format(edges[0]), x_format.format(edges[-1]))
    parts.append(_legend([("reference", REFERENCE_COLOR), ("window", WINDOW_COLOR)]))
    return _svg(parts)


def share_axis_top(top: float) -> float:
    """The top of an axis of shares whose largest is `top`: 5 % above it for room, but never
    above 100 % (an axis of shares that read 105 % at its top)."""
    return min(top * 1.05, max(top, 1.0))


def bars(categories: Sequence[str], reference: np.ndarray, window: np.ndarray) -> str:
    """Grouped bars of each category's share, reference beside window (the largest 20)."""
    order = np.argsort(-(np.asarray(reference) + np.asarray(window)), kind="stable")[:MAX_BARS]
    top = float(max(np.max(reference, initial=0.0), np.max(window, initial=0.0), 1e-9))
    frame = _Frame(0.0, float(len(order)), 0.0, share_axis_top(top))
    parts = frame.axes()
    slot = (frame.right - frame.left) / max(len(order), 1)
    rotate = len(order) > 6 or max((len(categories[i]) for i in order), default=0) > 6
    for position, index in enumerate(order):
        x = frame.x(float(position))
        for offset, (shares, color) in enumerate(
            ((reference, REFERENCE_COLOR), (window, WINDOW_COLOR))
        ):
            y = frame.y(float(shares[index]))
            parts.append(
                f'<rect x="{x + slot * (0.1 + 0.4 * offset):.1f}" y="{y:.1f}" '
                f'width="{slot * 0.4:.1f}" height="{frame.bottom - y:.1f}" fill="{color}"/>'
            )
        label = escape(categories[index][:14])
        cx, cy = x + slot / 2, frame.bottom + 12
        transform = f' transform="rotate(-30 {cx:.1f} {cy:.1f})"' if rotate else ""
        anchor = "end" if rotate else "middle"
        parts.append(
            f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="{anchor}"{transform}>{label}</text>'
        )
    parts.append(_legend([("reference", REFERENCE_COLOR), ("window", WINDOW_COLOR)]))
    return _svg(parts)


def lines(
    x: Sequence[float],
    series: Sequence[Series],
    x_labels: tuple[str, str],
    y_range: tuple[float, float] | None = None,
    guide: tuple[float, str] | None = None,
    y_labels: Callable[[Sequence[float]], list[str]] | None = None,
) -> str:
    """Lines over time, each with an optional interval band, and an optional horizontal guide.

    Args:
        x: (N,) positions (seconds, or bucket numbers).
        series: the lines.
        x_labels: the text under the first and the last position.
        y_range: the y axis's range; from the data when None.
        guide: (value, text) of a dashed horizontal line (an expected rate).
        y_labels: writes the y axis's bottom, middle and top values (default: percentages).
    """
    xs = np.asarray(x, dtype=np.float64)
    if y_range is None:
        values = [np.asarray(s.values, dtype=np.float64) for s in series]
        finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.zeros(1)])
        top = float(max(finite.max(), guide[0] if guide else 0.0, 1e-9))
        y_range = (0.0, share_axis_top(top) if y_labels is None else top * 1.1)
    x0, x1 = (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0)
    frame = _Frame(x0, x1, *y_range)
    parts = frame.axes(y_labels)
    for each in series:
        if each.low is not None and each.high is not None:
            parts += _band(frame, xs, each)
    if guide is not None:
        y = frame.y(guide[0])
        parts.append(
            f'<line x1="{frame.left}" y1="{y:.1f}" x2="{frame.right}" y2="{y:.1f}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
            f'<text x="{frame.right - 2}" y="{y - 3:.1f}" text-anchor="end">'
            f"{escape(guide[1])}</text>"
        )
    for each in series:
        parts += _polyline(frame, xs, each)
    parts += _x_ends(frame, *x_labels)
    parts.append(_legend([(s.name, s.color) for s in series]))
    return _svg(parts)


def _band(frame: _Frame, xs: np.ndarray, series: Series) -> list[str]:
    low = np.asarray(series.low, dtype=np.float64)
    high = np.asarray(series.high, dtype=np.float64)
    keep = np.isfinite(low) & np.isfinite(high)
    if keep.sum() < 2:
        return []
    upper = [_point(frame, a, b) for a, b in zip(xs[keep], high[keep], strict=True)]
    lower = [_point(frame, a, b) for a, b in zip(xs[keep], low[keep], strict=True)]
    points = " ".join(upper + lower[::-1])
    return [f'<polygon points="{points}" fill="{series.color}" fill-opacity="0.15"/>']


def _polyline(frame: _Frame, xs: np.ndarray, series: Series) -> list[str]:
    values = np.asarray(series.values, dtype=np.float64)
    dash = ' stroke-dasharray="5 3"' if series.dashed else ""
    parts: list[str] = []
    run: list[str] = []
    for a, b in [*zip(xs, values, strict=True), (np.nan, np.nan)]:
        if np.isfinite(b):
            run.append(_point(frame, a, b))
            continue
        if len(run) > 1:
            parts.append(
                f'<polyline points="{" ".join(run)}" fill="none" stroke="{series.color}" '
                f'stroke-width="1.8"{dash}/>'
            )
        for point in run:
            cx, cy = point.split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.2" fill="{series.color}"/>')
        run = []
    return parts


def _point(frame: _Frame, x: float, y: float) -> str:
    return f"{frame.x(x):.1f},{frame.y(y):.1f}"


def _x_ends(frame: _Frame, first: str, last: str) -> list[str]:
    y = frame.bottom + 24
    return [
        f'<text x="{frame.left}" y="{y}" text-anchor="start">{escape(first)}</text>',
        f'<text x="{frame.right}" y="{y}" text-anchor="end">{escape(last)}</text>',
    ]


def _legend(entries: Sequence[tuple[str, str]]) -> str:
    parts, x = [], MARGIN_LEFT + 8
    for name, color in entries:
        parts.append(
            f'<rect x="{x}" y="{LEGEND_Y}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{LEGEND_Y + 9}">{escape(name)}</text>'
        )
        x += 22 + 6 * len(name)
    return "".join(parts)


def _svg(parts: list[str]) -> str:
    body = "".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10" '
        f'role="img">{body}</svg>'
    )
