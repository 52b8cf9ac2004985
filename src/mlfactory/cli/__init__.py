"""The `mlfactory` command: one thin sub-command per stage.

Each command parses its arguments, composes the recipe and calls one function. Errors a user can
cause are printed as one line (`error: ...`) with exit code 2, never as a traceback. Recipes
are checked before torch is imported, so a typo costs about a second. Output is one line per
phase; `-v` shows every log line and warning (`mlfactory.output`).

The package: `base` holds the typer `app`, the consoles, the shared options, `friendly_errors`
and `main`; the commands are grouped by stage in `data_and_training`, `serving_and_monitoring`
and `registry_and_demo`. Importing `mlfactory.cli` registers every command.
"""

from __future__ import annotations

from mlfactory.cli.base import app, console, err_console, error_line, friendly_errors, main

# isort: off
# The order of these imports is the order of the commands in `mlfactory --help`.
from mlfactory.cli import data_and_training  # noqa: F401  (registers its commands)
from mlfactory.cli import serving_and_monitoring  # noqa: F401
from mlfactory.cli import registry_and_demo  # noqa: F401
# isort: on

__all__ = ["app", "console", "err_console", "error_line", "friendly_errors", "main"]
