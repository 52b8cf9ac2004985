"""The monitoring benchmark's results as the Markdown block docs/benchmarks.md quotes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.monitoring.measure import SIZES
from scipy.stats import binomtest

TARGET_SIZE = 200
LEVEL = 0.05
STRICT = 0.01


@dataclass(frozen=True)
class Target:
    """One target of the issue, measured: what it asks, whether it is met, and the figures."""

    text: str
    passed: bool
    figure: str

    def __str__(self) -> str:
        return f"- {'PASS' if self.passed else 'FAIL'} {self.text}: {self.figure}"


def targets(results: dict[str, Any]) -> list[Target]:
    """The targets of every bundle of a run, in the order `markdown` lists them."""
    found: list[Target] = []
    for bundle in results["bundles"]:
        _bundle_section(bundle, found)
    return found


def markdown(results: dict[str, Any]) -> str:
    """Every table of the run, then the targets with a pass/fail each."""
    lines = [
        f"Measured {results['started']} on {results['machine']}, Python {results['python']}; "
        f"the whole run took {results.get('seconds', 0) / 60:.1f} min.",
        "",
        "```",
        results["command"],
        "```",
        "",
    ]
    found: list[Target] = []
    for bundle in results["bundles"]:
        lines += _bundle_section(bundle, found)
    lines += ["### Targets", "", *map(str, found), ""]
    return "\n".join(lines)


def _bundle_section(result: dict[str, Any], targets: list[Target]) -> list[str]:
    meta, profile = result["bundle"], result["profile"]
    name = meta["name"]
    lines = [
        f"### {name} ({meta['modality']}; recipe `{meta['recipe']}` {' '.join(meta['overrides'])})",
        "",
        f"Test accuracy {meta['test_accuracy']:.3f}; embedding {meta['embedding_dim']} wide; "
        f"reference = {profile.get('source', 'validation split')}, {profile['n_reference']} "
        "inputs. Profile: "
        f"{profile['bytes'] / 1e6:.2f} MB (`profile.npz` + `profile.json`), built in "
        f"{profile['build_seconds']:.1f} s; temperature {profile['temperature']:.2f}; OOD "
        f"threshold {profile['threshold']:.3f} (1 % FPR). Pools: "
        + ", ".join(f"{k} {v['n']}" for k, v in result["pools"].items())
        + ".",
        "",
        "| OOD: unseen inputs of the training source against | kind | AUROC ood_score | "
        "AUROC max softmax | flagged at the threshold |",
        "|---|---|---:|---:|---:|",
    ]
    for row in result["ood"]:
        if "auroc" not in row:
            lines.append(f"| (unseen, in distribution) | — | — | — | {row['flagged']:.3f} |")
            continue
        lines.append(
            f"| {row['pool']} | {row['ood']} | {row['auroc']:.3f} | {row['auroc_msp']:.3f} | "
            f"{row['flagged']:.3f} |"
        )
        floor = 0.95 if meta["modality"] == "image" else 0.90
        if row["ood"] == "far":
            targets.append(
                Target(
                    f"{name}: far-OOD AUROC on {row['pool']} >= {floor}",
                    row["auroc"] >= floor,
                    f"{row['auroc']:.3f}",
                )
            )
        targets.append(
            Target(
                f"{name}: ood_score beats max softmax on {row['pool']}",
                row["auroc"] > row["auroc_msp"],
                f"{row['auroc']:.3f} vs {row['auroc_msp']:.3f}",
            )
        )
    lines += [
        "",
        "| accuracy on | n | true | estimated (ATC) [95 % CI] | abs error | mean calibrated "
        "confidence (CBPE) | abs error | mean raw confidence | abs error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["accuracy"]:
        low, high = row["ci"]
        lines.append(
            f"| {row['pool']} | {row['n']} | {row['accuracy']:.3f} | {row['estimated']:.3f} "
            f"[{low:.3f}, {high:.3f}] | {row['error']:.3f} | {row['cbpe']:.3f} | "
            f"{row['cbpe_error']:.3f} | {row['confidence']:.3f} | {row['confidence_error']:.3f} |"
        )
        targets.append(
            Target(
                f"{name}: estimated accuracy closer than raw confidence on {row['pool']}",
                row["error"] < row["confidence_error"],
                f"{row['error']:.3f} vs {row['confidence_error']:.3f}",
            )
        )
    lines += ["", *_drift_table(result, targets), "", *_coverage_table(result), ""]
    return lines


def _coverage_table(result: dict[str, Any]) -> list[str]:
    """How often the estimated accuracy's 95 % interval holds the window's true accuracy."""
    cells = [cell for cell in result["drift"] if "accuracy_coverage" in cell]
    if not cells:
        return []
    header = " | ".join(f"n={size}" for size in SIZES)
    lines = [
        "Estimated accuracy's 95 % interval on the same windows (those mlfactory checked): the "
        "share of windows whose true accuracy it contains, its mean width in brackets, and "
        "after the slash the share the first release's interval contains (the window's share "
        "with the plain binomial variance, no width when every prediction is above the "
        "threshold).",
        "",
        f"| window drawn from | {header} |",
        "|---|" + "---:|" * len(SIZES),
    ]
    by_pool: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        by_pool.setdefault(cell["pool"], []).append(cell)
    for pool, row in by_pool.items():
        values = " | ".join(
            f"{c['accuracy_coverage']:.3f} ({c['accuracy_width']:.3f}) / "
            f"{c['accuracy_coverage_normal']:.3f}"
            for c in row
        )
        lines.append(f"| {pool} | {values} |")
    return lines


def _drift_table(result: dict[str, Any], targets: list[Target]) -> list[str]:
    name = result["bundle"]["name"]
    header = " | ".join(f"n={size}" for size in SIZES)
    lines = [
        f"Share of windows flagged as drift: mlfactory at level {LEVEL} (in brackets: at level "
        f"{STRICT}) / Evidently's defaults, on the same windows (windows checked by each at "
        "n=200 after the name). No shift: the false-alarm rate; a shift: the power.",
        "",
        f"| window drawn from | {header} |",
        "|---|" + "---:|" * len(SIZES),
    ]
    by_pool: dict[str, dict[int, dict[str, Any]]] = {}
    for cell in result["drift"]:
        by_pool.setdefault(cell["pool"], {})[cell["size"]] = cell
    for pool, cells in by_pool.items():
        first = next(iter(cells.values()))
        label = f"{pool} ({'no shift' if first['kind'] == 'none' else first['kind']}"
        label += ", subtle)" if first["subtle"] else ")"
        at = cells[TARGET_SIZE]
        label += f" [{at['windows']} / {at['evidently_windows']}]"
        values = " | ".join(
            f"{c['ours']:.3f} ({c['ours_strict']:.3f}) / {c['evidently']:.3f}"
            for c in cells.values()
        )
        lines.append(f"| {label} | {values} |")
        _drift_targets(name, pool, first["kind"], first["subtle"], cells, targets)
    timing = result["timing"]
    ours = result["drift"][0]
    per_check = sum(c["ours_seconds"] for c in result["drift"] if c["size"] == TARGET_SIZE)
    count = sum(1 for c in result["drift"] if c["size"] == TARGET_SIZE)
    ours_200 = per_check / max(count, 1)
    evidently_fast = [c["evidently_seconds"] for c in result["drift"] if c["size"] == TARGET_SIZE]
    fast = sum(evidently_fast) / max(len(evidently_fast), 1)
    report = timing["evidently_report_200_s"]
    lines += [
        "",
        f"Time per check of a 200-row window: mlfactory {ours_200 * 1000:.0f} ms (every check); "
        f"Evidently's verdict functions alone {fast * 1000:.0f} ms, its full Report "
        f"(DataDriftPreset + EmbeddingsDrift) {report:.1f} s (mean of "
        f"{timing['evidently_reports']}). One 10,000-row window: mlfactory "
        f"{timing['ours_10000_s']:.2f} s.",
    ]
    del ours
    targets.append(
        Target(
            f"{name}: time per check <= 1/10 of Evidently's report",
            ours_200 <= report / 10,
            f"{ours_200 * 1000:.0f} ms vs {report * 1000:.0f} ms (x{report / ours_200:.0f})",
        )
    )
    targets.append(
        Target(
            f"{name}: a 10,000-row window checked in a few seconds",
            timing["ours_10000_s"] <= 5.0,
            f"{timing['ours_10000_s']:.2f} s",
        )
    )
    return lines


def _drift_targets(
    name: str,
    pool: str,
    kind: str,
    subtle: bool,
    cells: dict[int, dict[str, Any]],
    targets: list[Target],
) -> None:
    at = cells[TARGET_SIZE]
    if kind == "none":
        worst = max(c["ours"] for c in cells.values())
        targets.append(
            Target(
                f"{name}: false alarms <= {LEVEL} at every size",
                worst <= LEVEL,
                f"worst {worst:.3f}",
            )
        )
        for key, level in (("ours", LEVEL), ("ours_strict", STRICT)):
            beats = all(c[key] <= c["evidently"] for c in cells.values())
            figures = (
                f"{_with_interval(c[key], c['windows'])} vs "
                f"{_with_interval(c['evidently'], c['evidently_windows'])}"
                for c in cells.values()
            )
            targets.append(
                Target(
                    f"{name}: false alarms (level {level}) <= Evidently's at every size",
                    beats,
                    ", ".join(figures),
                )
            )
        return
    if kind in ("source", "label-prior"):
        targets.append(
            Target(
                f"{name}: power >= 0.9 at n=200 on {pool}", at["ours"] >= 0.9, f"{at['ours']:.2f}"
            )
        )
    note = " (subtle)" if subtle else ""
    for key, level in (("ours", LEVEL), ("ours_strict", STRICT)):
        beats = all(c[key] >= c["evidently"] for c in cells.values())
        targets.append(
            Target(
                f"{name}: power (level {level}) >= Evidently's on {pool}{note} at every size",
                beats,
                ", ".join(f"{c[key]:.2f} vs {c['evidently']:.2f}" for c in cells.values()),
            )
        )


def _with_interval(rate: float, windows: int) -> str:
    """A share of windows with its 95 % Wilson interval: false alarms are counts of a few."""
    flagged = round(rate * windows)
    interval = binomtest(flagged, windows).proportion_ci(0.95, method="wilson")
    return f"{rate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"
