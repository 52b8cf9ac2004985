"""`POST /v1/feedback`: true labels beside logged predictions; idempotent; each error is clear."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, make_url, select

from mlfactory.monitoring.log_window import read_window
from mlfactory.serving import log_database
from mlfactory.serving.app import create_app
from mlfactory.serving.feedback import MAX_BODY_BYTES, MAX_ITEMS
from mlfactory.serving.log_tables import feedback
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.settings import ServingSettings

from .conftest import LABELS, DigitImage, upload


def predict_two(client: TestClient, digit_images: list[DigitImage]) -> str:
    files = [upload(f"{i}.png", digit_images[i].read_bytes()) for i in (3, 17)]
    response = client.post("/v1/predict", files=files)
    assert response.status_code == 200
    request_id: str = response.json()["request_id"]
    return request_id


def true_labels(log_url: str) -> list[str | None]:
    window = read_window(log_url, "digits-serving-test", "0.0.1", labels=LABELS)
    return list(window.true_labels or [])


def feedback_rows(log_url: str) -> int:
    log = PredictionLog(log_url)
    with log.engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(feedback)).scalar_one()
    log.close()
    return int(count)


def test_labels_round_trip_and_the_last_one_wins(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    request_id = predict_two(logged_client, digit_images)
    one = logged_client.post("/v1/feedback", json={"request_id": request_id, "label": "3"})
    assert (one.status_code, one.json()) == (200, {"stored": 1})
    assert true_labels(log_url) == ["3", None]

    both = [
        {"request_id": request_id, "input_index": 1, "label": "4"},
        {"request_id": request_id, "input_index": 0, "label": "8"},
        {"request_id": request_id, "input_index": 0, "label": "5"},  # the last one wins
    ]
    response = logged_client.post("/v1/feedback", json=both)
    assert (response.status_code, response.json()) == (200, {"stored": 2})
    assert true_labels(log_url) == ["5", "4"]
    again = logged_client.post("/v1/feedback", json=both)  # a retry changes nothing
    assert again.status_code == 200
    assert true_labels(log_url) == ["5", "4"] and feedback_rows(log_url) == 2


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"request_id": "never-served", "label": "3"}, 404, "no logged prediction"),
        ({"request_id": "{id}", "input_index": 2, "label": "3"}, 404, "inputs 0 to 1, not 2"),
        ({"request_id": "{id}", "label": "cat"}, 422, "'cat' is not one of the model's labels"),
        # The error is about what was sent: one label object, or a list and which item.
        ({"request_id": "{id}"}, 422, "invalid JSON body: label: Field required"),
        ({"request_id": "{id}", "label": "3", "input_index": -1}, 422, "body: input_index: "),
        ({"request_id": "{id}", "label": "3", "input_index": "0"}, 422, "must be a JSON integer"),
        ({"request_id": "{id}", "label": "3", "input_index": True}, 422, "must be a JSON integer"),
        ({"request_id": "{id}", "label": "3", "input_index": 1e300}, 422, "input_index: the nu"),
        # Only what the server's request ids may be (a NUL would fail PostgreSQL's insert).
        ({"request_id": "{id}\u0000", "label": "3"}, 422, "request_id: must be 1 to 64 letters"),
        ({"request_id": "a b", "label": "3"}, 422, "request_id: must be 1 to 64 letters"),
        ([{"request_id": "{id}", "label": "3"}, {"request_id": "{id}"}], 422, "body: 1.label: "),
        (7, 422, 'send an object {"request_id", "label", "input_index"} or a list of them'),
        ([], 422, "the list is empty"),
        ([{"request_id": "{id}", "label": "3"}, {"request_id": "{id}", "label": "x"}], 422, "'x'"),
    ],
)
def test_each_error_is_a_status_with_a_detail_and_stores_nothing(
    logged_client: TestClient,
    digit_images: list[DigitImage],
    log_url: str,
    body: object,
    status: int,
    fragment: str,
) -> None:
    request_id = predict_two(logged_client, digit_images)
    sent = json.loads(json.dumps(body).replace("{id}", request_id))
    response = logged_client.post("/v1/feedback", json=sent)
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert feedback_rows(log_url) == 0  # a list is stored whole or not at all


def test_half_a_utf16_pair_is_named_as_such(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    request_id = predict_two(logged_client, digit_images)
    body = b'{"request_id": "' + request_id.encode() + b'\\ud800", "label": "3"}'
    response = logged_client.post(
        "/v1/feedback", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]  # the parser's words: "unexpected end of hex escape"
    assert detail.startswith("invalid JSON body: Invalid JSON: a lone surrogate: a \\uD800-")
    assert "at line 1 column" in detail and feedback_rows(log_url) == 0


def test_the_body_is_limited(logged_client: TestClient, digit_images: list[DigitImage]) -> None:
    request_id = predict_two(logged_client, digit_images)
    many = [{"request_id": request_id, "label": "3"}] * (MAX_ITEMS + 1)
    assert logged_client.post("/v1/feedback", json=many).status_code == 413
    huge = b'{"request_id": "' + b"x" * MAX_BODY_BYTES + b'", "label": "3"}'
    response = logged_client.post(
        "/v1/feedback", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    broken = logged_client.post(
        "/v1/feedback", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and "invalid JSON body" in broken.json()["detail"]


def test_a_locked_database_is_503_and_the_retry_stores_it(
    image_bundle: Path,
    digit_images: list[DigitImage],
    log_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server's 10 s busy timeout, shortened so that the lock below outlasts it quickly.
    pragmas = [p for p in log_database.SQLITE_PRAGMAS if "busy_timeout" not in p]
    monkeypatch.setattr(log_database, "SQLITE_PRAGMAS", (*pragmas, "PRAGMA busy_timeout=100"))
    with TestClient(create_app(image_bundle, ServingSettings(log_url=log_url))) as client:
        request_id = predict_two(client, digit_images)
        body = {"request_id": request_id, "label": "3"}
        other = sqlite3.connect(str(make_url(log_url).database), isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            locked = client.post("/v1/feedback", json=body)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert locked.status_code == 503
        assert locked.json() == {"detail": "the feedback could not be stored; retry shortly"}
        assert "mlfactory_prediction_log_write_errors_total 1.0" in client.get("/metrics").text
        assert feedback_rows(log_url) == 0
        retried = client.post("/v1/feedback", json=body)
        assert (retried.status_code, retried.json()) == (200, {"stored": 1})
    assert true_labels(log_url) == ["3", None]


def test_feedback_before_start_up_is_503(image_bundle: Path, log_url: str) -> None:
    client = TestClient(create_app(image_bundle, ServingSettings(log_url=log_url)))  # no lifespan
    response = client.post("/v1/feedback", json={"request_id": "abc", "label": "3"})
    assert response.status_code == 503
    assert response.json() == {"detail": "the model is not loaded yet; retry shortly"}


def test_the_body_must_be_json_and_may_begin_with_a_byte_order_mark(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str
) -> None:
    """`text/plain` is what a web page may post to another site unasked (a CORS simple
    request): refused. A UTF-8 byte order mark, which some editors and Windows tools write, is
    read past (RFC 8259 lets a parser ignore it)."""
    request_id = predict_two(logged_client, digit_images)
    body = json.dumps({"request_id": request_id, "label": "3"}).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        refused = logged_client.post("/v1/feedback", content=body, headers={"content-type": kind})
        assert refused.status_code == 415
        assert refused.json()["detail"].startswith(f"unsupported content type '{kind}': send ")
    assert feedback_rows(log_url) == 0

    marked = logged_client.post(
        "/v1/feedback",
        content=b"\xef\xbb\xbf" + body,
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert (marked.status_code, marked.json()) == (200, {"stored": 1})
    # No content type: what a page's fetch() of a Blob sends across sites unasked, refused.
    untyped = logged_client.post("/v1/feedback", content=body.replace(b'"3"', b'"4"'))
    assert untyped.status_code == 415
    assert untyped.json()["detail"].startswith("no Content-Type header: send Content-Type: ")
    assert true_labels(log_url) == ["3", None]
    for utf16 in ("utf-16", "utf-16-be"):  # a Windows tool's "Unicode": said, not "invalid JSON"
        encoded = json.dumps({"request_id": request_id, "label": "5"}).encode(utf16)
        if not encoded.startswith((b"\xff\xfe", b"\xfe\xff")):
            encoded = b"\xfe\xff" + encoded
        refused = logged_client.post(
            "/v1/feedback", content=encoded, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith(
            "invalid JSON body: it is UTF-16 text; send UTF-8"
        )
    assert true_labels(log_url) == ["3", None]


def test_two_models_sharing_a_log_never_share_a_request_id(
    logged_client: TestClient, digit_images: list[DigitImage], log_url: str, tmp_path: Path
) -> None:
    """Two servers share one log, and a client gave both predictions the same X-Request-ID:
    the second is answered under an id of its own, each label goes to one model's input by
    the id its response returned, and the shared id, naming two inputs, labels neither."""
    from .tiny_bundles import tiny_bundle

    shared = {"X-Request-ID": "order-1001"}
    image = [upload("3.png", digit_images[3].read_bytes())]
    first = logged_client.post("/v1/predict", files=image, headers=shared)
    assert first.json()["request_id"] == "order-1001"
    text_bundle = tiny_bundle(tmp_path / "text", "text")  # labels crude, grain, ship
    with TestClient(create_app(text_bundle, ServingSettings(log_url=log_url))) as text_client:
        texts = {"texts": ["wheat exports fell"]}
        second = text_client.post("/v1/predict", json=texts, headers=shared)
        own_id = second.json()["request_id"]
        assert own_id != "order-1001" and second.headers["x-request-id"] == own_id
        either = text_client.post("/v1/feedback", json={"request_id": "order-1001", "label": "3"})
        assert either.status_code == 409
        assert "was sent with 2 requests" in either.json()["detail"]
        digit = text_client.post("/v1/feedback", json={"request_id": own_id, "label": "3"})
        assert digit.status_code == 422  # the text model's input: no digit label
        text = text_client.post("/v1/feedback", json={"request_id": own_id, "label": "grain"})
        assert (text.status_code, text.json()) == (200, {"stored": 1})
    assert true_labels(log_url) == [None]  # the digit model's input is unlabelled
    assert feedback_rows(log_url) == 1


def test_a_label_is_the_models_whichever_unicode_form_it_was_typed_in() -> None:
    from mlfactory.errors import InputError
    from mlfactory.serving.feedback import _model_spelling

    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert _model_spelling(decomposed, [composed, "bar"], "r1") == composed
    assert _model_spelling(composed, [decomposed, "bar"], "r1") == decomposed
    with pytest.raises(InputError, match="'tea' is not one of the model's labels"):
        _model_spelling("tea", [composed, "bar"], "r1")
