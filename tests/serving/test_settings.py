"""ServingSettings: defaults, environment variables, and one-line errors for bad values."""

from __future__ import annotations

import pytest

from mlfactory.errors import ConfigError
from mlfactory.serving.settings import ServingSettings, env_name


def test_defaults_without_environment() -> None:
    settings = ServingSettings.from_env({})
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_files == 64
    assert settings.ort_intra_op_threads == 0
    assert settings == ServingSettings()


def test_reads_each_field_from_its_variable() -> None:
    environ = {
        "MLFACTORY_MAX_UPLOAD_BYTES": "2048",
        "MLFACTORY_MAX_FILES": " 3 ",
        "MLFACTORY_MAX_TEXT_CHARS": "1_000",
        "MLFACTORY_MAX_REQUEST_BYTES": "4096",
        "MLFACTORY_ORT_INTRA_OP_THREADS": "2",
        "MLFACTORY_UNRELATED": "x",
    }
    settings = ServingSettings.from_env(environ)
    assert (settings.max_upload_bytes, settings.max_files, settings.max_text_chars) == (
        2048,
        3,
        1000,
    )
    assert (settings.max_request_bytes, settings.ort_intra_op_threads) == (4096, 2)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFACTORY_MAX_FILES", "7")
    assert ServingSettings.from_env().max_files == 7


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MLFACTORY_MAX_FILES", "many", "MLFACTORY_MAX_FILES: 'many' is not an integer"),
        ("MLFACTORY_MAX_UPLOAD_BYTES", "0", "MLFACTORY_MAX_UPLOAD_BYTES: 0 must be >= 1"),
        ("MLFACTORY_ORT_INTRA_OP_THREADS", "-1", "MLFACTORY_ORT_INTRA_OP_THREADS: -1 must be"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        ServingSettings.from_env({variable: value})


def test_env_name() -> None:
    assert env_name("max_files") == "MLFACTORY_MAX_FILES"
