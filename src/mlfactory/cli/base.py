"""The typer `app` of the `mlfactory` command and what its commands share.

The consoles, the shared options and help strings, `friendly_errors` (an error a user can cause
is one `error: ...` line and exit code 2, never a traceback), the `--version` callback and
`main`, the console script. The commands themselves are in the other modules of `mlfactory.cli`,
which registers them all when imported.
"""

from __future__ import annotations

import errno
import functools
import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from mlfactory import __version__
from mlfactory.errors import Interrupted, MlfactoryError, Terminated
from mlfactory.termination import exit_at_once_on_ctrl_c, redeliver_swallowed_signals
from mlfactory.writable_home import use_writable_home_folders

app = typer.Typer(
    name="mlfactory",
    help="From raw data to a served, monitored classification model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Printed strings are text, not rich markup: file names, labels and messages keep their brackets
# (`mlfactory[train]`, `dvc:PATH[@REV]`, a folder named `[draft]`).
console = Console(soft_wrap=True, markup=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False)
F = TypeVar("F", bound=Callable[..., Any])

OVERRIDES = typer.Argument(
    None, help="Config overrides, e.g. trainer.max_epochs=3", show_default=False
)
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show every log line and warning.")
SHOW_CONFIG = typer.Option(False, "--show-config", help="Print the resolved recipe and exit.")
TARGET_HELP = (
    "A bundle folder, a run folder (holding bundle/), an MLflow run id or a registered model "
    "(models:/NAME/VERSION, models:/NAME@ALIAS)."
)
LOG_HELP = (
    "The prediction log: an SQLAlchemy URL or a SQLite file; default MLFACTORY_LOG_URL, then "
    "sqlite:///predictions.db (the server's default)."
)


def number_from(low: float, high: float = math.inf) -> Callable[[float | None], float | None]:
    """An option's callback that takes numbers from `low` to `high`, and says that nan is not
    one (typer's own range check calls it too large, or too small)."""

    def check(value: float | None) -> float | None:
        if value is not None and not low <= value <= high:
            scope = f"from {low:g} to {high:g}" if high < math.inf else f"of at least {low:g}"
            raise typer.BadParameter(f"{value:g} is not a number {scope}")
        return value

    return check


def error_line(message: str) -> Text:
    """`error: <message>`, the prefix in red."""
    return Text.assemble(("error:", "red"), " ", message)


# A path the user gave that cannot be used: their input, not our bug (exit code 2).
PATH_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.EROFS,
        errno.EEXIST,
    }
)


def os_error_line(exc: OSError) -> str:
    """An OSError as one line: what went wrong and the path, without a traceback."""
    where = f": {exc.filename}" if exc.filename is not None else ""
    return f"{exc.strerror or exc}{where}"


def friendly_errors(func: F) -> F:
    """Turn user-caused errors into one line on stderr and exit code 2 (130 on Ctrl-C, 143 on
    a SIGTERM a command turned into `Terminated`). A
    file-system error is one line too: exit code 2 when the path cannot be used (too long, not
    allowed, missing), 1 when the machine failed (a full or failing disk)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mlfactory.targets import downloads_removed

        try:
            with downloads_removed():  # a run id's or models:/ bundle lasts as long as the command
                return func(*args, **kwargs)
        except Interrupted as exc:
            err_console.print(str(exc), highlight=False)
            raise typer.Exit(code=143 if isinstance(exc, Terminated) else 130) from None
        except MlfactoryError as exc:
            err_console.print(error_line(str(exc)), highlight=False)
            raise typer.Exit(code=2) from None
        except OSError as exc:
            err_console.print(error_line(os_error_line(exc)), highlight=False)
            raise typer.Exit(code=2 if exc.errno in PATH_ERRNOS else 1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        print(f"mlfactory {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """From raw data to a served, monitored classification model."""


def main(args: list[str] | None = None) -> None:
    """The `mlfactory` command: the app, with command-line mistakes (an unknown command or
    option, a value of the wrong type, a missing argument) as one `error:` line and exit code
    2, as every other wrong input is, instead of the usage box typer draws.

    Args:
        args: the arguments (default: the process's).
    """
    # typer vendors click; its exceptions are not re-exported
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    command = typer.main.get_command(app)
    if args is None:  # the console script: before matplotlib or ONNX Runtime look for them
        use_writable_home_folders()
        redeliver_swallowed_signals()
    try:
        code = command.main(args=args, prog_name="mlfactory", standalone_mode=False)
        if args is None:  # the console script, not a caller in a process that goes on
            exit_at_once_on_ctrl_c()
    except NoArgsIsHelpError:  # `mlfactory` alone: the help is printed
        raise SystemExit(2) from None
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else _command_path(command, args)
        message = exc.format_message().rstrip(".")
        err_console.print(error_line(f"{message} (see {where} --help)"), highlight=False)
        raise SystemExit(2) from None
    except typer.Abort:  # Ctrl-C at a prompt
        err_console.print("interrupted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _command_path(command: Any, args: list[str] | None) -> str:
    """`mlfactory NAME` for the command the arguments name, for an error that carries no context
    (an option missing its value: `mlfactory demo --out`); else `mlfactory`."""
    given = sys.argv[1:] if args is None else args
    name = next((arg for arg in given if not arg.startswith("-")), None)
    return f"mlfactory {name}" if name in getattr(command, "commands", {}) else "mlfactory"
