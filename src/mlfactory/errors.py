"""Errors a user can cause. Each carries a one-line message naming the input and the fix."""

import importlib


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


class Terminated(Interrupted):
    """SIGTERM stopped a run (a `kill`, a container stopped), as Ctrl-C would. Exit code 143."""


class LogDatabaseError(MlfactoryError):
    """The prediction log's database cannot be reached or read (a wrong URL, a server down)."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, stripped (its type's name when it has none)."""
    return next(
        (line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__
    )


def cloud_storage_errors() -> tuple[type[Exception], ...]:
    """The base errors of the cloud storage clients that are installed (a DVC remote plugin or
    MLflow's artifact stores use them): an endpoint that cannot be reached, missing credentials,
    a refused request. They are not OSErrors, and each client raises its own."""
    bases = {
        "botocore.exceptions": ("BotoCoreError", "ClientError"),  # S3: boto3 (dvc[s3], MLflow)
        "google.auth.exceptions": ("GoogleAuthError",),  # GCS
        "google.api_core.exceptions": ("GoogleAPIError",),
        "gcsfs.retry": ("HttpError",),  # gcsfs (dvc[gs]): a refused request, e.g. 401
        "azure.core.exceptions": ("AzureError",),  # Azure
    }
    found: list[type[Exception]] = []
    for module_name, names in bases.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.extend(getattr(module, name) for name in names if hasattr(module, name))
    return tuple(found)
