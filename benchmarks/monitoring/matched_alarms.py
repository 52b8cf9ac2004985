"""Power at Evidently's false-alarm rate: both sides compared where they raise as many alarms.

The issue compares mlfactory at its default level (0.05) with Evidently's defaults. Where
Evidently raises far more false alarms (with more than 1,000 reference rows its feature checks
compare distances with a fixed 0.1 instead of testing), its share of flagged shifted windows is
mostly those alarms, and "power at least Evidently's" asks mlfactory to raise as many. This
reading gives mlfactory the same false-alarm budget on the same unshifted windows. Holm's
correction finds drift at level a when the smallest raw p-value times the number of checks
tested is at most a; the reading takes the largest cut-off c on that statistic (c above 1 is
looser than any level) at which mlfactory's own false alarms stay within Evidently's, and
mlfactory's power with that cut-off on the shifted windows.

    python -m benchmarks.monitoring.matched_alarms runs/bench/monitoring/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def matched_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """For every subtle shift and size: Evidently's false alarms and power, and mlfactory's with
    the cut-off that keeps its own false alarms within Evidently's on the same windows."""
    cells = [cell for cell in result["drift"] if cell.get("holm_statistics")]
    unshifted = {cell["size"]: cell for cell in cells if cell["kind"] == "none"}
    rows = []
    for cell in cells:
        if not cell["subtle"] or cell["size"] not in unshifted:
            continue
        quiet = unshifted[cell["size"]]
        alarms = quiet["evidently"]
        cutoff = matched_cutoff(np.asarray(quiet["holm_statistics"]), alarms)
        rows.append(
            {
                "pool": cell["pool"],
                "size": cell["size"],
                "evidently_false_alarms": alarms,
                "evidently_power": cell["evidently"],
                "cutoff": cutoff,
                "false_alarms": _share(quiet["holm_statistics"], cutoff),
                "power": _share(cell["holm_statistics"], cutoff),
                "power_default": cell["ours"],
            }
        )
    return rows


def matched_cutoff(unshifted: np.ndarray, false_alarms: float) -> float:
    """The largest cut-off c at which at most `false_alarms` of these windows have a statistic
    at most c; just below the smallest statistic when even one alarm is too many."""
    allowed = int(np.floor(false_alarms * len(unshifted) + 1e-9))
    ordered = np.sort(unshifted)
    alarms = np.searchsorted(ordered, ordered, side="right")  # windows at or below each value
    fitting = ordered[(alarms <= allowed) & np.isfinite(ordered)]
    return float(fitting[-1]) if fitting.size else float(np.nextafter(ordered[0], 0.0))


def _share(statistics: list[float], cutoff: float) -> float:
    return float(np.mean(np.asarray(statistics, dtype=np.float64) <= cutoff))


def markdown(results: dict[str, Any]) -> str:
    rows = [
        (result["bundle"]["name"], row)
        for result in results["bundles"]
        for row in matched_rows(result)
    ]
    if not rows:
        return "No power at Evidently's false-alarm rate: this run kept no per-window p-values.\n"
    lines = [
        "Power at Evidently's false-alarm rate, on the same windows: mlfactory's drift rule "
        "(smallest raw p-value times the checks tested at most c; c = 0.05 is the default "
        "level) with the largest c whose false alarms on the unshifted windows stay within "
        "Evidently's.",
        "",
        "| bundle | shift | n | Evidently: false alarms, power | mlfactory matched: c, false "
        "alarms, power | mlfactory at 0.05: power |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in rows:
        lines.append(
            f"| {name} | {row['pool']} | {row['size']} | "
            f"{row['evidently_false_alarms']:.3f}, {row['evidently_power']:.2f} | "
            f"{row['cutoff']:.3g}, {row['false_alarms']:.3f}, {row['power']:.2f} | "
            f"{row['power_default']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Power at Evidently's false-alarm rate.")
    parser.add_argument("results", type=Path, help="a monitoring benchmark's results.json")
    args = parser.parse_args(argv)
    print(markdown(json.loads(args.results.read_text())), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
