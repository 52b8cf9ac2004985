"""Errors a user can cause. Each carries a one-line message naming the input and the fix."""


class MlfactoryError(Exception):
    """Base class: the CLI prints these as one line instead of a traceback."""


class ConfigError(MlfactoryError):
    """A recipe key or value is wrong."""


class DataError(MlfactoryError):
    """A data source is missing, unreadable or holds no usable items."""


class InputError(MlfactoryError):
    """An input to a model (an upload, a text, a file) cannot be used; maps to HTTP 4xx."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


class BundleError(MlfactoryError):
    """A model bundle is missing, incomplete or inconsistent."""


class Interrupted(MlfactoryError):
    """The user stopped a run (Ctrl-C); the message says how to continue it. Exit code 130."""


class LogDatabaseError(MlfactoryError):
    """The prediction log's database cannot be reached or read (a wrong URL, a server down)."""
