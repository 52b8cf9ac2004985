"""The MLflow-store helpers that need no store: how URLs with passwords are shown."""

from __future__ import annotations

import pytest

from mlfactory.mlflow_store import hide_password, shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://ml:s3cret@db:5432/log", "postgresql+psycopg://ml:***@db:5432/log"),
        ("sqlite:///runs/predictions.db", "sqlite:///runs/predictions.db"),
        # SQLAlchemy cannot parse these (a port that is no number, an unclosed IPv6 bracket):
        # the password is masked all the same.
        ("postgresql://ml:s3cret@db:port/log", "postgresql://ml:***@db:port/log"),
        ("postgresql://ml:s3cret@[::1/log", "postgresql://ml:***@[::1/log"),
        ("not a url", "not a url"),
    ],
)
def test_a_shown_url_never_holds_the_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "s3cret" not in shown_url(url)


def test_hide_password_masks_the_uri_password_wherever_the_text_repeats_it() -> None:
    uri = "https://user:tok3n@mlflow.example.com"
    text = f"cannot reach {uri}: 401 for tok3n"
    assert hide_password(text, uri) == (
        "cannot reach https://user:***@mlflow.example.com: 401 for ***"
    )
    assert hide_password("no password here", "sqlite:///mlruns.db") == "no password here"


def test_a_short_password_is_not_masked_inside_other_words() -> None:
    uri = "postgresql+psycopg://u:p@127.0.0.1:1/x"
    text = f"{uri} cannot be used: (psycopg.OperationalError) port 1 failed"
    assert hide_password(text, uri) == (
        "postgresql+psycopg://u:***@127.0.0.1:1/x cannot be used: "
        "(psycopg.OperationalError) port 1 failed"
    )
