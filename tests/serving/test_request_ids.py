"""Request ids (`serving.request_ids`): a client may choose its request's id, a conservative
token, and no id it chooses makes its request share an id with another in the prediction log,
so that its predictions and labels never mix with another request's."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from mlfactory.serving.log_tables import chosen_request_ids, feedback, predictions
from mlfactory.serving.prediction_log import LoggedPrediction, PredictionLog
from mlfactory.serving.taken_ids import give_taken_ids_new_ones

from .conftest import DigitImage, upload

NEW_ID = re.compile(r"[0-9a-f]{32}")


def predict(client: TestClient, digit: DigitImage, request_id: str | None = None) -> str:
    """POST one digit (with `X-Request-ID: request_id`); the id the server answered with."""
    headers = {} if request_id is None else {"X-Request-ID": request_id}
    files = [upload("d.png", digit.read_bytes())]
    response = client.post("/v1/predict", files=files, headers=headers)
    assert response.status_code == 200, response.text
    answered: str = response.json()["request_id"]
    assert response.headers["x-request-id"] == answered
    return answered


def logged_rows(
    request_id: str, requested_id: str | None = None, inputs: int = 2, **fields: Any
) -> list[LoggedPrediction]:
    """The rows of one request of `inputs` inputs, of model "m" 1 labelling "a" unless
    `fields` say otherwise."""
    values: dict[str, Any] = {
        "model_name": "m",
        "model_version": "1",
        "input_summary": {},
        "embedding": [0.0],
        "score": 1.0,
        "latency_ms": 1.0,
        "label": "a",
        **fields,
    }
    values.setdefault("probabilities", {values["label"]: 1.0})
    return [
        LoggedPrediction(
            request_id=request_id, input_index=index, requested_id=requested_id, **values
        )
        for index in range(inputs)
    ]


def logged(log_url: str) -> list[tuple[str, str | None, str | None]]:
    """(request_id, requested_id, true label) of every logged prediction, in order."""
    log = PredictionLog(log_url)
    joined = predictions.outerjoin(
        feedback,
        (feedback.c.request_id == predictions.c.request_id)
        & (feedback.c.input_index == predictions.c.input_index),
    )
    query = select(predictions.c.request_id, predictions.c.requested_id, feedback.c.label)
    with log.engine.connect() as connection:
        rows = connection.execute(query.select_from(joined).order_by(predictions.c.id)).all()
    log.close()
    return [(row[0], row[1], row[2]) for row in rows]


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "a b",
        "a/b",
        "x" * 65,
        "<script>",
        "order%201",
        "caf\u00e9".encode(),
        "tab\there",
    ],
)
def test_an_id_outside_the_token_rule_is_replaced(
    logged_client: TestClient, sent: str | bytes
) -> None:
    response = logged_client.get("/health", headers={"X-Request-ID": sent})  # type: ignore[dict-item]
    assert response.status_code == 200
    assert NEW_ID.fullmatch(response.headers["x-request-id"])


def test_the_longest_id_of_the_rule_is_kept_and_the_first_header_counts(
    logged_client: TestClient,
) -> None:
    longest = "A-z_0.9:" * 8
    response = logged_client.get("/health", headers={"X-Request-ID": longest})
    assert response.headers["x-request-id"] == longest
    twice = [("X-Request-ID", "first-1"), ("X-Request-ID", "second-2")]
    assert logged_client.get("/health", headers=twice).headers["x-request-id"] == "first-1"


def test_a_chosen_id_is_the_log_key_once_and_a_reused_one_is_replaced(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    assert predict(logged_client, digit_images[0], "order-7") == "order-7"
    again = predict(logged_client, digit_images[1], "order-7")
    assert NEW_ID.fullmatch(again)
    unnamed = predict(logged_client, digit_images[2])
    assert NEW_ID.fullmatch(unnamed) and unnamed != again
    assert logged(log_url) == [
        ("order-7", "order-7", None),
        (again, "order-7", None),
        (unnamed, None, None),
    ]


def test_a_reused_id_labels_no_other_requests_input(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    """Someone sends another image under an id a client already used (or will use): labels
    sent for that id name two inputs and are refused; each response's own id labels its own."""
    mine = predict(logged_client, digit_images[3], "invoice-1")
    theirs = predict(logged_client, digit_images[17], "invoice-1")
    refused = logged_client.post("/v1/feedback", json={"request_id": "invoice-1", "label": "3"})
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "'invoice-1' was sent with 2 requests" in detail and "different inputs" in detail
    assert logged(log_url) == [(mine, "invoice-1", None), (theirs, "invoice-1", None)]

    wrong = logged_client.post("/v1/feedback", json={"request_id": theirs, "label": "9"})
    assert wrong.status_code == 200
    assert logged(log_url) == [(mine, "invoice-1", None), (theirs, "invoice-1", "9")]


def test_a_retry_of_the_same_input_under_its_id_can_still_be_labelled_by_it(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    """A client that timed out and sent the same image again with the same id: the retry gets
    an id of its own, and a label sent for the client's id names one input: the first."""
    first = predict(logged_client, digit_images[5], "upload-5")
    retry = predict(logged_client, digit_images[5], "upload-5")
    labelled = logged_client.post("/v1/feedback", json={"request_id": "upload-5", "label": "5"})
    assert labelled.status_code == 200
    assert logged(log_url) == [(first, "upload-5", "5"), (retry, "upload-5", None)]


def test_requests_logged_under_one_id_before_ids_were_unique_are_not_labelled(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    """A log written by an older server (or two replicas that took the same new id at the
    same instant) holds two requests' different inputs under one id: no label joins both."""
    log = PredictionLog(log_url)
    log.start()
    digits = {"model_name": "digits-serving-test", "model_version": "0.0.1", "label": "3"}
    for sha in ("a" * 64, "b" * 64):
        rows = logged_rows("shared", inputs=1, input_sha256=sha, **digits)
        log.submit(rows).result(timeout=10)
    log.close()
    refused = logged_client.post("/v1/feedback", json={"request_id": "shared", "label": "3"})
    assert refused.status_code == 409
    assert [label for _, _, label in logged(log_url)] == [None, None]


def test_one_commit_gives_a_taken_id_to_one_request_only(tmp_path: Path) -> None:
    """Requests of one group commit, and the log, checked together in the writer's transaction."""

    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    log.start()
    log.submit(logged_rows("logged", "logged")).result(timeout=10)
    log.close()
    group = [
        logged_rows("x", "x"),
        logged_rows("x", "x"),
        logged_rows("logged", "logged"),
        logged_rows("s" * 32),
    ]
    with log.engine.begin() as connection:
        give_taken_ids_new_ones(connection, group)
    first, second, third, server_made = ([row.request_id for row in request] for request in group)
    assert first == ["x", "x"] and server_made == ["s" * 32] * 2
    assert len(set(second)) == 1 and NEW_ID.fullmatch(second[0])
    assert len(set(third)) == 1 and NEW_ID.fullmatch(third[0]) and third[0] != second[0]
    assert [row.requested_id for row in group[1] + group[2]] == ["x", "x", "logged", "logged"]
    with log.engine.connect() as connection:
        claimed = set(connection.scalars(select(chosen_request_ids.c.request_id)))
    assert claimed == {"logged", "x"}  # chosen ids kept; new and server-made ones unclaimed
    log.engine.dispose()


def test_two_writers_committing_one_chosen_id_at_once_do_not_both_keep_it(
    any_log_url: str,
) -> None:
    """Two workers (two engines) commit requests that chose the same id, the second while the
    first's transaction is still open: it cannot see the first's rows, waits on the first's
    claim of the id, and is committed again with a new id."""
    first, second = PredictionLog(any_log_url), PredictionLog(any_log_url)
    second.start()
    ours, theirs = logged_rows("x", "x"), logged_rows("x", "x")
    with first.engine.begin() as connection:
        give_taken_ids_new_ones(connection, [ours])
        committed = second.submit(theirs)
        deadline = time.monotonic() + 10
        while second.lag_s() == 0 and time.monotonic() < deadline:  # its writer took them
            time.sleep(0.01)
        time.sleep(0.3)  # ... and looked the id up, finding it free
        assert not committed.done()  # it waits for our claim of the id
        connection.execute(insert(predictions), [row.to_row() for row in ours])
    committed.result(timeout=30)
    second.close()
    first.close()
    assert {row.request_id for row in ours} == {"x"}
    assert len({row.request_id for row in theirs}) == 1
    assert NEW_ID.fullmatch(theirs[0].request_id) and theirs[0].requested_id == "x"
    kept = [(request_id, requested) for request_id, requested, _ in logged(any_log_url)]
    assert kept == [("x", "x")] * 2 + [(theirs[0].request_id, "x")] * 2
