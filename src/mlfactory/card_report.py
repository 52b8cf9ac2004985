"""`mlfactory report`: the model card as one self-contained HTML page that opens offline.

The page shows the card of `mlfactory.model_card` (what `GET /v1/model/card` and the web UI's
model card page show): its style is inline, its figures are HTML and inline SVG, and it names
no other file or host. Given a prediction log, the monitoring report's own section
(`mlfactory.monitoring.html_report.render_section`) is embedded after the card.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from mlfactory.bundle import Bundle, load_bundle
from mlfactory.card_text import number, ood_rate
from mlfactory.errors import ConfigError
from mlfactory.model_card import model_card
from mlfactory.report_files import check_report_path
from mlfactory.times import export_time

STYLE = """
body { font-family: system-ui, sans-serif; color: #222; margin: 24px; max-width: 1180px; }
h1 { margin-bottom: 0.1em; } h2 { margin: 1.4em 0 0.4em; border-bottom: 1px solid #ddd; }
.muted { color: #777; } code { background: #f4f4f4; padding: 0 4px; border-radius: 3px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tiles { display: flex; gap: 16px; } .tile { border: 1px solid #ddd; padding: 8px 16px; }
.tile b { display: block; font-size: 26px; }
table.confusion td { text-align: center; min-width: 28px; border: 1px solid #fff; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; }
dt { font-weight: 600; } dd { margin: 0; }
"""


def render_page(card: dict[str, Any], monitoring: str | None = None) -> str:
    """The whole page: the card, then the monitoring section (an HTML fragment) if given."""
    title = f"Model card: {card['name']} {card['version']}"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        card_section(card),
    ]
    if monitoring:
        parts += ["<h2>Monitoring</h2>", monitoring]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def card_section(card: dict[str, Any]) -> str:
    """The model card as HTML: every text from the bundle is escaped."""
    labels = [str(label) for label in card["labels"]]
    metrics = card["metrics"]
    parts = [
        f"<h1>Model card: {escape(card['name'])} {escape(card['version'])}</h1>",
        f"<p class='muted'>{escape(card['modality'])} classifier · {len(labels)} labels: "
        f"{escape(', '.join(labels))} · exported {escape(export_time(card.get('created_at')))}</p>",
        "<h2>Test metrics</h2><div class='tiles'>",
        _tile("Accuracy", number(metrics["accuracy"])),
        _tile("Macro-F1", number(metrics["f1_macro"])),
        _tile("Test items", str(metrics["test_items"] or "-")),
        "</div>",
    ]
    if metrics["unsupported_labels"]:
        missing = escape(", ".join(metrics["unsupported_labels"]))
        parts.append(f"<p>No test item of {missing}: left out of macro-F1.</p>")
    parts.append(_evaluated_on(card))
    parts.append(_per_class(card["per_class"]))
    parts.append("<h2>Confusion matrix</h2>" + _confusion(card.get("confusion_matrix"), labels))
    parts.append("<h2>Training data</h2>" + _data(card["data"]))
    lineage = card["lineage"]
    parts.append(
        "<h2>Lineage</h2>"
        + _definitions(
            [
                ("Git commit", lineage.get("git_commit")),
                ("MLflow run", lineage.get("mlflow_run_id")),
                ("Recipe", lineage.get("recipe")),
            ]
        )
    )
    parts.append("<h2>Reference profile</h2>" + _profile(card.get("reference_profile")))
    return "\n".join(parts)


def _evaluated_on(card: dict[str, Any]) -> str:
    """The fingerprint of the data the test metrics were computed on, said to differ from the
    training data's when `mlfactory evaluate` ran on changed data."""
    evaluated, trained = card["metrics"].get("data_fingerprint"), card["data"].get("fingerprint")
    if not isinstance(evaluated, str) or not evaluated:
        return ""
    line = f"<p>Computed on data fingerprint <code>{escape(evaluated)}</code>"
    if trained and trained != evaluated:
        line += (
            f": <b>not the data the model was trained on</b> (<code>{escape(str(trained))}"
            "</code>); the recipe's data changed before mlfactory evaluate ran"
        )
    return line + ".</p>"


def _per_class(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class='muted'>No per-class scores stored in this bundle.</p>"
    head = "<tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    body = "".join(
        f"<tr><td>{escape(row['label'])}</td>"
        + "".join(f"<td class='num'>{_score(row[k])}</td>" for k in ("precision", "recall", "f1"))
        + f"<td class='num'>{row['support'] if row['support'] is not None else '-'}</td></tr>"
        for row in rows
    )
    return f"<table class='per-class'>{head}{body}</table>"


def _confusion(matrix: list[list[int]] | None, labels: Sequence[str]) -> str:
    if matrix is None:
        return "<p class='muted'>No confusion matrix stored in this bundle.</p>"
    top = max((max(row) for row in matrix if row), default=0) or 1
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{escape(x)}</th>" for x in labels)
    rows = []
    for label, counts in zip(labels, matrix, strict=True):
        cells = []
        for count in counts:
            shade = count / top  # the blues of the UI's heatmap: white to #08519c
            red, green = round(255 - 247 * shade), round(255 - 174 * shade)
            blue = round(255 - 99 * shade)
            ink = "#fff" if shade > 0.5 else "#222"
            style = f"background: rgb({red},{green},{blue}); color: {ink}"
            cells.append(f"<td style='{style}'>{count}</td>")
        rows.append(f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>")
    return f"<table class='confusion'>{head}</tr>{''.join(rows)}</table>"


def _data(data: dict[str, Any]) -> str:
    parts = [
        _definitions(
            [("Source", data.get("source"))]
            + ([("Version", data["version"])] if data.get("version") else [])
            + [("Fingerprint", data.get("fingerprint"))]
        )
    ]
    counts = data.get("counts")
    if not counts:
        parts.append("<p class='muted'>This bundle does not record its items per split.</p>")
        return "\n".join(parts)
    splits = list(counts)
    labels = sorted({label for split in splits for label in counts[split]})
    head = "<tr><th>label</th>" + "".join(f"<th>{escape(s)}</th>" for s in splits) + "</tr>"
    body = "".join(
        f"<tr><td>{escape(label)}</td>"
        + "".join(f"<td class='num'>{counts[s].get(label, 0)}</td>" for s in splits)
        + "</tr>"
        for label in labels
    )
    totals = "".join(f"<td class='num'><b>{sum(counts[s].values())}</b></td>" for s in splits)
    parts.append(f"<table class='counts'>{head}{body}<tr><td><b>all</b></td>{totals}</tr></table>")
    return "\n".join(parts)


def _profile(profile: dict[str, Any] | None) -> str:
    if profile is None:
        return "<p>None: this bundle has no monitoring reference profile.</p>"
    if profile.get("problem"):
        return f"<p>{escape(profile['problem'])}</p>"
    features = ", ".join(f"{k} ({v})" for k, v in (profile.get("features") or {}).items())
    return _definitions(
        [
            (
                "Built from",
                f"{profile.get('source') or '?'}, {profile.get('reference_items')} items",
            ),
            ("Accuracy on it", number(profile.get("reference_accuracy"))),
            (
                "OOD score",
                f"{profile.get('ood_method') or '?'}, threshold "
                f"{number(profile.get('ood_threshold'))} ({ood_rate(profile)})",
            ),
            ("Calibration temperature", number(profile.get("temperature"))),
            ("Input features checked for drift", features or "none"),
        ]
    )


def _definitions(pairs: Sequence[tuple[str, Any]]) -> str:
    items = "".join(
        f"<dt>{escape(name)}</dt><dd><code>{escape(str(value or 'unknown'))}</code></dd>"
        for name, value in pairs
    )
    return f"<dl>{items}</dl>"


def _tile(name: str, value: str) -> str:
    return f"<div class='tile'>{escape(name)}<b>{escape(value)}</b></div>"


def _score(value: Any) -> str:
    """A score with four decimals, as the test metrics are shown (1.0000 beside 0.9474)."""
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def write_report(
    bundle_path: Path, out: Path, log_url: str | None = None, last: int | None = None
) -> Path:
    """Write the card of the bundle at `bundle_path` to `out` (with monitoring, given a log).

    Args:
        bundle_path: the bundle folder.
        out: the HTML file to write.
        log_url: a prediction log's SQLAlchemy URL; adds the monitoring section.
        last: only the last `last` predictions of the log.

    Raises:
        BundleError: the bundle is missing or malformed.
        ConfigError: `out` is a folder, inside a bundle, the log, not `.html`
            (`check_report_path`), or cannot be written (a full disk: the message names it).
    """
    bundle = load_bundle(bundle_path)
    check_report_path(out, "--out", bundle.path, log_url)
    monitoring = monitoring_section(bundle, log_url, last) if log_url else None
    card = model_card(bundle)
    page = render_page(card, monitoring)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write it: {exc.strerror or exc}") from None
    return out


def monitoring_section(bundle: Bundle, log_url: str, last: int | None = None) -> str:
    """The monitoring report of the bundle's logged predictions, as an HTML section.

    `mlfactory monitor`'s own steps (`monitor_bundle`: read the window, run the checks against
    the bundle's reference profile) and its renderer (`html_report.render_section`).

    Raises:
        MlfactoryError: the bundle has no reference profile, the log cannot be read, or it
            holds no prediction of this bundle; the message is one line.
    """
    from mlfactory.monitor_command import monitor_bundle
    from mlfactory.monitoring.distributions import distributions
    from mlfactory.monitoring.html_report import render_section, report_spans

    result = monitor_bundle(str(bundle.path), log_url, last)
    profile, window, report = result.profile, result.window, result.report
    spans = report_spans(profile, window, report)
    return render_section(report, distributions(profile, window), spans)
