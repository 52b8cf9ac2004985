"""`mlfactory monitor`: check a window of a bundle's logged predictions against its profile.

The command reads the window from the prediction log (`read_window`), runs every check
(`check_window`) and renders the result: a table, the JSON contract, or the HTML report. Every
way it can have nothing to check (no profile, no log, an empty log, another model's log) ends
in one line that says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from mlfactory.bundle import Bundle
from mlfactory.durations import HOW_TO_WRITE, parse_duration
from mlfactory.errors import BundleError, ConfigError, LogDatabaseError, MlfactoryError, first_line
from mlfactory.mlflow_store import shown_url
from mlfactory.monitoring.drift import DRIFT, INSUFFICIENT, NO_DRIFT
from mlfactory.monitoring.flagged import LISTED, MAX_LISTED, flagged_lines
from mlfactory.monitoring.labels import moved_text, weakest_text
from mlfactory.monitoring.number_text import number_text, p_value_text
from mlfactory.monitoring.profile import (
    REWRITE,
    ReferenceProfile,
    load_profile,
    missing_profile_message,
)
from mlfactory.monitoring.report import DriftReport, MonitorSettings, Window, check_window
from mlfactory.targets import resolve_bundle

LOG_URL_ENV = "MLFACTORY_LOG_URL"
LEVEL_ENV = "MLFACTORY_MONITOR_LEVEL"
STATUS_STYLES = {DRIFT: "bold red", NO_DRIFT: "green", INSUFFICIENT: "yellow"}


class NothingToCheck(MlfactoryError):
    """The window holds no prediction of the bundle (an empty log, another model's log)."""


@dataclass
class MonitorResult:
    """What one `monitor` run read and found."""

    bundle: Bundle
    profile: ReferenceProfile
    window: Window
    report: DriftReport
    log_url: str


def log_url_or_default(log: str | None) -> str:
    """`--log`, else `MLFACTORY_LOG_URL`, else the server's default store.

    `--log` may also name the SQLite file itself (the path the demo prints, say): an existing
    file that is not a URL reads as `sqlite:///` and its absolute path.
    """
    from mlfactory.serving.settings import DEFAULT_LOG_URL

    if log is not None and not log.strip():
        raise ConfigError(
            "--log is empty: give the prediction log, an SQLAlchemy URL or a SQLite file, or "
            "leave --log out for MLFACTORY_LOG_URL or the server's default"
        )
    if log is not None and "://" not in log and Path(log).expanduser().is_file():
        from sqlalchemy import URL

        # escaped as a URL (a file named `log#1.db`), and read back as the path by SQLAlchemy
        file = str(Path(log).expanduser().resolve())
        return URL.create("sqlite", database=file).render_as_string(hide_password=False)
    named = os.environ.get(LOG_URL_ENV) if log is None else None
    if named and "://" not in named:  # the server refuses it too: say where it came from
        raise ConfigError(
            f"{LOG_URL_ENV}={named} is not an SQLAlchemy URL: write sqlite:///{named} for a "
            "SQLite file (as the server reads the variable), or give the file with --log"
        )
    return log or named or DEFAULT_LOG_URL


def level_or_default(level: float | None) -> float:
    """`--level`, else `MLFACTORY_MONITOR_LEVEL` (the server's level: a cron job's verdict
    then agrees with its gauges and alerts), else 0.05.

    Raises:
        MlfactoryError: `--level` or the variable is not a level the server accepts
            (`ServingSettings.monitor_level`: at least `MIN_MONITOR_LEVEL`, below 1).
    """
    from mlfactory.serving.settings import MIN_MONITOR_LEVEL, ServingSettings

    if level is None:
        return ServingSettings.from_env({LEVEL_ENV: os.environ.get(LEVEL_ENV, "")}).monitor_level
    if not MIN_MONITOR_LEVEL <= level < 1.0:
        raise MlfactoryError(
            f"--level {level:g}: give a false-alarm level between {MIN_MONITOR_LEVEL:g} and 1 "
            f"(1 excluded), as the server's {LEVEL_ENV}; e.g. 0.01"
        )
    return level


def parse_since(text: str) -> timedelta:
    """A duration such as `90s`, `30m`, `6h`, `2d` or `1w`.

    Raises:
        MlfactoryError: the text is not a positive number and one of those units.
    """
    since = parse_duration(text)
    if since is None:
        raise MlfactoryError(f"--since '{text}' is not a duration: {HOW_TO_WRITE}")
    return since


def monitor_bundle(
    target: str,
    log: str | None = None,
    last: int | None = None,
    since: str | None = None,
    level: float | None = None,
    flagged: int | None = None,
) -> MonitorResult:
    """Read the window of the bundle's predictions from the log and check it.

    Args:
        target: a bundle folder, a run folder or an MLflow run id (`resolve_bundle`); the
            bundle must hold a monitoring profile.
        log: the prediction log, an SQLAlchemy URL or a SQLite file (`log_url_or_default`).
        last: the most recent `last` predictions (default `window_rows`: the latest 1,000, or
            with `since` the latest 100,000 of that period).
        since: only predictions within this duration before now (`parse_since`).
        level: the family-wise false-alarm level of the verdict (`level_or_default`).
        flagged: the most out-of-distribution inputs the report lists, at most (default
            `LISTED`, 10).

    Raises:
        MlfactoryError: a wrong argument, a bundle without profile, an unreadable log, or a
            window with no prediction of the bundle; the message is one line.
    """
    from mlfactory.monitoring.log_window import (
        other_models_note,
        period_cut_note,
        read_window,
        window_rows,
    )

    settings = _settings(last, level, flagged)
    window_since = parse_since(since) if since is not None else None
    bundle = resolve_bundle(target)
    profile = load_profile(bundle.path)
    if profile is None:
        raise BundleError(missing_profile_message(bundle.meta.name, bundle.meta.version))
    if profile.labels != bundle.meta.labels:
        raise BundleError(
            f"the monitoring profile in {bundle.path} is for other labels than the bundle's "
            f"({len(profile.labels)} labels against {len(bundle.meta.labels)}, or other names "
            f"or order): {REWRITE}"
        )
    url = log_url_or_default(log)
    name, version = bundle.meta.name, bundle.meta.version
    rows = window_rows(last, window_since)
    run_id = bundle.meta.mlflow_run_id
    window = read_window(
        url, name, version, rows, window_since, labels=bundle.meta.labels, run_id=run_id
    )
    if len(window) == 0 and window.other_models:
        raise NothingToCheck(
            f"the log at {shown_url(url)} holds {window.other_models:,} predictions of {name} "
            f"{version}, all by another model than this bundle's (MLflow run {run_id}): give a "
            "retrained model a new version or name"
        )
    if len(window) == 0:
        raise NothingToCheck(_nothing_to_check(url, name, version, since))
    width, expected = window.embeddings.shape[1], profile.drift.projection.mean.shape[0]
    if width != expected:
        raise MlfactoryError(
            f"the log's embeddings of {name} {version} are {width} wide, the bundle's "
            f"{expected}: the log at {shown_url(url)} was written by another model of that name"
        )
    model = {"name": name, "version": version}
    report = check_window(profile, window, model, settings)
    cut = period_cut_note(len(window), last, since, "--last N")
    report.notes += [cut] if cut else []
    others = other_models_note(window, f"{name} {version}", run_id)
    report.notes += [others] if others else []
    return MonitorResult(bundle, profile, window, report, url)


def _settings(last: int | None, level: float | None, flagged: int | None) -> MonitorSettings:
    """The check's settings from `monitor_bundle`'s arguments, refusing wrong ones in one line."""
    from mlfactory.monitoring.log_window import MAX_WINDOW_ROWS

    if last is not None and last < 1:
        raise MlfactoryError(f"--last {last}: give a number of predictions, at least 1")
    if last is not None and last > MAX_WINDOW_ROWS:
        raise MlfactoryError(
            f"--last {last:,}: at most {MAX_WINDOW_ROWS:,} predictions, as the server's "
            "endpoints (reading 100,000 1,280-wide embeddings takes about 0.55 GB)"
        )
    level = level_or_default(level)
    flagged = LISTED if flagged is None else flagged
    if not 0 <= flagged <= MAX_LISTED:
        raise MlfactoryError(
            f"--flagged {flagged}: list 0 to {MAX_LISTED:,} out-of-distribution inputs"
        )
    return MonitorSettings(level=level, flagged=flagged)


def logged_models(log_url: str) -> list[tuple[str, str, int]]:
    """(model name, version, predictions) of every model in the log, the most logged first.

    Raises:
        LogDatabaseError: the log cannot be opened or read, or the database holds other tables
            but not the log's (`check_log_tables`).
    """
    from sqlalchemy import column, func, inspect, select, table
    from sqlalchemy.exc import SQLAlchemyError

    from mlfactory.monitoring.log_window import open_log

    engine = open_log(log_url)
    rows = table("predictions", column("model_name"), column("model_version"))
    count = func.count().label("n")
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            check_log_tables(tables, shown_url(log_url))
            if rows.name not in tables:
                return []
            query = (
                select(rows.c.model_name, rows.c.model_version, count)
                .group_by(rows.c.model_name, rows.c.model_version)
                .order_by(count.desc())
            )
            return [(str(a), str(b), int(n)) for a, b, n in connection.execute(query)]
    except SQLAlchemyError as exc:
        reason = first_line(getattr(exc, "orig", None) or exc)
        message = f"cannot read the prediction log at {shown_url(log_url)}: {reason}"
        raise LogDatabaseError(message) from None
    finally:
        engine.dispose()


def check_log_tables(tables: set[str], shown: str) -> None:
    """Refuse a database that holds tables but not the log's `predictions`: another database
    than the server's log. One without any table is an empty log (a new file).

    Raises:
        LogDatabaseError: it names the log's tables missing.
    """
    from mlfactory.serving.log_tables import feedback, predictions

    if not tables or predictions.name in tables:
        return
    missing = " and ".join(t.name for t in (predictions, feedback) if t.name not in tables)
    held = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise LogDatabaseError(
        f"the database at {shown} holds no prediction log: it lacks the log's tables {missing} "
        f"(its tables: {held}); name the server's log, its {LOG_URL_ENV}"
    )


def _nothing_to_check(url: str, name: str, version: str, since: str | None) -> str:
    models = logged_models(url)
    where = f"the log at {shown_url(url)}"
    if not models:
        return f"{where} is empty: no prediction was logged yet (is the server writing there?)"
    own = sum(n for model, ver, n in models if (model, ver) == (name, version))
    if own:
        return (
            f"no prediction of {name} {version} in the last {since} in {where} ({own:,} older "
            "ones): widen --since, or use --last"
        )
    held = ", ".join(f"{model} {ver} ({n:,})" for model, ver, n in models[:5])
    more = f" and {len(models) - 5} more" if len(models) > 5 else ""
    return f"no prediction of {name} {version} in {where}; it holds {held}{more}"


def write_html(result: MonitorResult, path: Path) -> None:
    """Write the self-contained HTML report of `result` to `path`.

    Raises:
        MlfactoryError: the file cannot be written, or is a folder, the log or a file of the
            bundle (`check_report_path`: a report never overwrites what it read).
    """
    from mlfactory.monitoring.html_report import report_html
    from mlfactory.report_files import check_report_path

    check_report_path(path, "--html", result.bundle.path, result.log_url)
    try:
        path.write_text(report_html(result.profile, result.window, result.report), "utf-8")
    except OSError as exc:
        raise MlfactoryError(f"cannot write the HTML report to {path}: {exc.strerror}") from None


def report_renderable(report: DriftReport) -> Group:
    """The report for the terminal: one line of verdict, the checks, OOD and accuracy."""
    model = f"{report.model['name']} {report.model['version']}"
    span = (
        f", {report.window_from:%Y-%m-%d %H:%M:%S} to {report.window_to:%Y-%m-%d %H:%M:%S} UTC"
        if report.window_from and report.window_to
        else ""
    )
    head = Text(f"{model}: {report.n:,} predictions{span}: ")
    head.append(report.status.upper(), style=STATUS_STYLES.get(report.status, ""))
    head.append(f" (level {report.level:g}, {report.correction}-corrected p-values)")
    # Nothing in the table wraps; the details follow it, one line each, so that an
    # 80-column terminal still reads them whole.
    table = Table()
    table.add_column("check", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("statistic", justify="right", no_wrap=True)
    table.add_column("p-value", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for check in report.checks:
        table.add_row(
            check.name,
            check.kind,
            number_text(check.statistic),
            p_value_text(check.p_value),
            Text(check.status, style=STATUS_STYLES.get(check.status, "dim")),
        )
    lines: list[Text | Table] = [head, table, *_detail_lines(report)]
    if report.status == INSUFFICIENT:
        lines.append(
            Text(
                f"insufficient data: {report.n} predictions are too few for every check; "
                "widen the window (--last, --since)",
                style="yellow",
            )
        )
    if report.ood_fraction is not None:
        lines.append(
            Text(
                f"out of distribution: {report.ood_fraction:.1%} of inputs "
                f"(score above {report.ood_threshold:.4g}; "
                f"{report.ood_expected:.0%} expected in distribution)"
            )
        )
    if report.flagged:
        lines.append(Text("most out of distribution:"))
        lines += [Text(line) for line in flagged_lines(report.flagged)]
    lines.append(Text(accuracy_line(report)))
    moved, weakest = moved_text(report.labels), weakest_text(report.labels)
    if moved:
        lines.append(Text(f"labels predicted, most changed: {moved}"))
    if weakest:
        lines.append(Text(f"live accuracy by true label, lowest: {weakest}"))
    lines += [Text(f"note: {note}", style="dim") for note in report.notes]
    return Group(*lines)


def _detail_lines(report: DriftReport) -> list[Text]:
    """One line per distinct detail, after the names of the checks that gave it."""
    checks: dict[str, list[str]] = {}
    for check in report.checks:
        if check.detail:
            checks.setdefault(check.detail, []).append(check.name)
    if len(checks) == 1 and len(next(iter(checks.values()))) == len(report.checks) > 1:
        return [Text(f"  every check: {next(iter(checks))}")]
    return [Text(f"  {', '.join(names)}: {detail}") for detail, names in checks.items()]


def accuracy_line(report: DriftReport) -> str:
    """`accuracy: estimated ... (mean confidence ...); live ...` for one report."""
    estimated, live = report.estimated, report.live
    text = "accuracy: estimated "
    text += (
        f"{estimated.value:.3f} [{estimated.low:.3f}, {estimated.high:.3f}]"
        if estimated.value is not None
        else "none"
    )
    text += report.confidence_text()
    if live.value is not None:
        text += f"; live {live.value:.3f} [{live.low:.3f}, {live.high:.3f}] on {live.n:,} labelled"
    else:
        text += "; live: no feedback labels in the window"
    return text
