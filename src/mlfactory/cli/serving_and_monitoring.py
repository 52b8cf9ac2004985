"""The commands that use a bundle: predict, serve, monitor, collect, ui, report.

`serve` never imports torch, and neither does any of these commands: each imports what it needs
when it runs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from mlfactory.cli.base import LOG_HELP, TARGET_HELP, app, console, err_console, friendly_errors
from mlfactory.errors import ConfigError, InputError
from mlfactory.output import configure_output


@app.command()
@friendly_errors
def predict(
    target: str = typer.Argument(..., help=TARGET_HELP),
    inputs: list[str] | None = typer.Argument(
        None,
        help="Files, folders (recursive), .csv/.tsv/.jsonl tables for text bundles, "
        "or - for stdin (text bundles: one text per line).",
        show_default=False,
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write results to a .csv or .jsonl file (streamed)."
    ),
    text: list[str] | None = typer.Option(
        None, "--text", help="A text to classify (text bundles; repeat for more)."
    ),
    text_column: str = typer.Option("text", help="The column of a table that holds the text."),
    batch_size: int = typer.Option(32, min=1, help="Inputs per model call."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    max_input_bytes: int | None = typer.Option(
        None,
        min=1,
        help="Skip files (and lines of stdin) larger than this many bytes; refuse a larger "
        "stdin (default 10 MiB, the server's default MLFACTORY_MAX_UPLOAD_BYTES).",
        show_default=False,
    ),
) -> None:
    """Classify inputs in-process with ONNX Runtime.

    Exit code 1 if any input was skipped, 141 when stdout closes before all results are out.
    """
    from mlfactory.batch_predict import MAX_INPUT_BYTES, iter_inputs, plan_inputs, predict_stream
    from mlfactory.batch_results import (
        check_output,
        quiet_when_stdout_closes,
        results_writer,
        skip_reporter,
        summary_line,
        write_results,
    )
    from mlfactory.predictor import Predictor
    from mlfactory.targets import resolve_bundle

    configure_output(False)
    if as_json and output is not None:
        raise InputError(
            f"--json prints the results; --output {output} writes them to a file: give one "
            "(a .jsonl --output file holds JSON Lines)"
        )
    bundle = resolve_bundle(target)
    limit = max_input_bytes or MAX_INPUT_BYTES
    plan = plan_inputs(
        list(inputs or []), bundle.modality, list(text or []), text_column, None, limit, output
    )
    check_output(output, bundle.path, plan.files)  # before it is opened: it may be an input
    predictor = Predictor.from_path(bundle.path)  # test-runs the model: a corrupt one fails here
    writer = results_writer(output, bundle.meta.labels, console, as_json)
    results = predict_stream(predictor, iter_inputs(plan), batch_size)
    with quiet_when_stdout_closes():  # `--json | head`: the reader has all it wants
        summary = write_results(
            results, writer, plan.count, sys.stderr.isatty(), skip_reporter(err_console)
        )
    if output is not None or summary.skipped or plan.ignored:
        ignored = f"; ignored {plan.ignored} file(s) of other kinds" if plan.ignored else ""
        err_console.print(summary_line(summary, output) + ignored, highlight=False)
    if summary.skipped:
        raise typer.Exit(code=1)


@app.command()
@friendly_errors
def serve(
    target: str = typer.Argument(..., help=TARGET_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int | None = typer.Option(
        None, help="Worker processes (uvicorn); default MLFACTORY_WORKERS or 1."
    ),
) -> None:
    """Serve a bundle over HTTP (FastAPI + ONNX Runtime; torch is never imported)."""
    from mlfactory.serving.run import run_server
    from mlfactory.targets import resolve_bundle

    run_server(resolve_bundle(target).path, host=host, port=port, workers=workers)


@app.command()
@friendly_errors
def monitor(
    target: str = typer.Argument(..., help=TARGET_HELP),
    log: str | None = typer.Option(None, help=LOG_HELP, show_default=False),
    last: int | None = typer.Option(
        None,
        help="Check the last N predictions (default 1000; with --since, of that period's, "
        "default 100000; at most 100000).",
        show_default=False,
    ),
    since: str | None = typer.Option(
        None, help="Check the predictions of the last TIME: 30m, 6h, 2d, 1w.", metavar="TIME"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead."),
    html: str | None = typer.Option(
        None, help="Also write a self-contained HTML report here.", metavar="FILE"
    ),
    level: float | None = typer.Option(
        None,
        help="False-alarm level of the drift verdict (default MLFACTORY_MONITOR_LEVEL, the "
        "server's, then 0.05).",
        show_default=False,
    ),
    flagged: int | None = typer.Option(
        None,
        help="List at most N of the most out-of-distribution inputs, by request id and "
        "position (default 10, at most 1000; the table shows 3).",
        metavar="N",
        show_default=False,
    ),
    fail_on_drift: bool = typer.Option(
        False,
        "--fail-on-drift",
        help="Exit with code 1 when the verdict is drift (for cron jobs and CI).",
    ),
) -> None:
    """Check a window of the bundle's logged predictions for drift, OOD inputs and accuracy."""
    import json

    from mlfactory.monitor_command import monitor_bundle, report_renderable, write_html

    if html is not None and not html.strip():
        raise ConfigError("--html is empty: give the file to write the HTML report to")
    result = monitor_bundle(target, log, last, since, level, flagged)
    if html is not None:
        write_html(result, Path(html).expanduser())
    if as_json:
        print(json.dumps(result.report.to_json(), indent=2))
    else:
        console.print(report_renderable(result.report), highlight=False)
        if html is not None:
            console.print(f"HTML report: {html}", highlight=False, soft_wrap=True)
    if fail_on_drift and result.report.drift:
        raise typer.Exit(code=1)


@app.command()
@friendly_errors
def collect(
    target: str = typer.Argument(..., help=TARGET_HELP),
    out: Path = typer.Option(..., help="A new (or empty) folder to write the dataset into."),
    inputs: str | None = typer.Option(
        None,
        help="The server's input store; default MLFACTORY_INPUT_STORE.",
        show_default=False,
    ),
    log: str | None = typer.Option(None, help=LOG_HELP, show_default=False),
    since: str | None = typer.Option(
        None, help="Only labels sent within the last TIME: 30d, 2w.", metavar="TIME"
    ),
) -> None:
    """Write the inputs users labelled (POST /v1/feedback) as a dataset to retrain on."""
    from mlfactory.collect_command import (
        collect_labelled,
        retrain_target,
        summary_line,
        unseen_labels_warning,
    )

    result = collect_labelled(target, out, inputs, log, since)
    console.print(summary_line(result), highlight=False, soft_wrap=True)
    warning = unseen_labels_warning(result)
    if warning:
        console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    # the model's own recipe, as it was trained (`train` quotes the path for Hydra itself); the
    # data's absolute path, which the bundle it trains records and reads from any folder
    source = shlex.quote(f"data.source={result.source}")
    console.print(
        f"train on them: mlfactory train {shlex.quote(retrain_target(target))} {source}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@friendly_errors
def ui(
    api: str = typer.Option(..., help="The mlfactory server, e.g. http://127.0.0.1:8000."),
    host: str = typer.Option("127.0.0.1", help="Interface the UI binds."),
    port: int = typer.Option(8501, help="TCP port of the UI."),
) -> None:
    """The web UI (Streamlit, `ui` extra): predict, model card, monitoring; HTTP only."""
    from mlfactory.ui.launch import run_ui

    code = run_ui(api, host, port)
    if code:
        raise typer.Exit(code=code)


@app.command()
@friendly_errors
def report(
    target: str = typer.Argument(..., help=TARGET_HELP),
    out: Path = typer.Option(Path("card.html"), help="The HTML file to write."),
    log: str | None = typer.Option(
        None,
        help="A prediction log, an SQLAlchemy URL or a SQLite file (e.g. predictions.db): "
        "adds monitoring.",
    ),
    last: int | None = typer.Option(None, min=1, help="With --log: the last N predictions."),
) -> None:
    """The model card as one self-contained HTML page (opens offline); monitoring with --log."""
    from mlfactory.card_report import write_report
    from mlfactory.targets import resolve_bundle

    if last is not None and log is None:
        raise typer.BadParameter("counts predictions of a log: give --log too", param_hint="--last")
    path = write_report(resolve_bundle(target).path, out, log, last)
    console.print(f"model card written to {path}", highlight=False)
