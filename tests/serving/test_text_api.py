"""A real text bundle (MiniLM + tokenizer.json, exported to ONNX) behind the HTTP API.

Good texts are classified; every bad input is a 4xx with a one-line string `detail`. The client
re-raises anything that reaches the catch-all handler, so a 500 fails the test.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.numerics import assert_same_prediction, assert_sums_to_one

from .test_bad_inputs import assert_error

REUTERS_SAMPLE = Path(__file__).parents[1] / "fixtures" / "text" / "reuters_r8_sample.jsonl"
LABELS = ["crude", "grain", "ship"]
MAX_LENGTH = 16
MEGABYTE_TEXT = "oil " * (1024 * 1024 // 4)


def articles() -> list[dict[str, str]]:
    return [json.loads(line) for line in REUTERS_SAMPLE.read_text().splitlines()]


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained `news` classifier exported as a real text bundle (weights: MiniLM)."""
    from mlfactory.config.loader import load_recipe
    from mlfactory.data.dataset import Item, content_key
    from tests.training_path import untrained_bundle

    recipe = load_recipe("news", [f"preprocess.max_length={MAX_LENGTH}"])
    items = [
        Item(key=content_key(row["text"].encode()), split="test", **row) for row in articles()[::6]
    ]
    out = tmp_path_factory.mktemp("text-bundle")
    return untrained_bundle(recipe, LABELS, items, out, "news-serving-test").path


def values(probabilities: dict[str, float]) -> np.ndarray:
    return np.array([probabilities[label] for label in LABELS])


@pytest.fixture(scope="module")
def client(text_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(text_bundle, ServingSettings())) as started:
        yield started


def test_texts_are_classified_like_the_predictor(client: TestClient) -> None:
    texts = [row["text"] for row in articles()[:3]] + ["Héllo wörld ☃"]
    response = client.post("/v1/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    predictor: Predictor = client.app.state.predictor  # type: ignore[attr-defined]
    for text, prediction in zip(texts, predictions, strict=True):
        [alone] = predictor.predict([text.encode("utf-8")])
        assert list(prediction["probabilities"]) == LABELS
        assert_sums_to_one(prediction["probabilities"].values(), len(LABELS))
        # A batch of 4 and a batch of 1 may run different fp32 kernels.
        assert_same_prediction(values(prediction["probabilities"]), values(alone.probabilities))
    single = client.post("/v1/predict", json={"text": texts[0]})
    assert single.status_code == 200
    [alone_served] = single.json()["predictions"]
    assert_same_prediction(
        values(alone_served["probabilities"]), values(predictions[0]["probabilities"])
    )


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"text": ""}, 422, "text 0 is empty"),
        ({"texts": ["oil prices", " \n\t "]}, 422, "text 1 is empty"),
        ({"text": "\u3000\u2003"}, 422, "text 0 is empty"),
        ({"texts": []}, 422, "'texts' is an empty list"),
        ({"texts": "not a list"}, 422, "texts: Input should be a valid array"),
        ({"texts": [1, 2]}, 422, "texts.0: Input should be a valid string"),
        ({"texts": None}, 422, "exactly one of 'texts'"),
        ({}, 422, "exactly one of 'texts'"),
        ([], 422, "invalid JSON body"),
        ({"text": "a", "texts": ["b"]}, 422, "exactly one of 'texts'"),
        ({"txt": "typo"}, 422, "txt: Extra inputs are not permitted"),
        ({"text": MEGABYTE_TEXT}, 413, "text 0 has 1048576 characters; the limit is 10000"),
    ],
)
def test_bad_texts_are_4xx(client: TestClient, payload: Any, status: int, fragment: str) -> None:
    assert_error(client.post("/v1/predict", json=payload), status, fragment)


@pytest.mark.parametrize(
    "body",
    [
        b'{"texts": ["caf\xe9 au lait"]}',  # Latin-1, not UTF-8
        b'{"text": "\xff\xfe\xfd"}',
        b'{"text": "\\ud800"}',  # a lone surrogate cannot be encoded as UTF-8
        b"{texts: [",  # not JSON at all
    ],
)
def test_invalid_utf8_or_json_is_422(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/v1/predict", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid JSON body")


def test_text_limit_follows_the_serving_setting(text_bundle: Path) -> None:
    settings = ServingSettings.from_env({"MLFACTORY_MAX_TEXT_CHARS": "2000000"})
    with TestClient(create_app(text_bundle, settings)) as client:
        response = client.post("/v1/predict", json={"text": MEGABYTE_TEXT})
    # Accepted, and cut to max_length tokens like any long text.
    assert response.status_code == 200, response.text
    small = ServingSettings.from_env({"MLFACTORY_MAX_TEXT_CHARS": "5"})
    with TestClient(create_app(text_bundle, small)) as client:
        assert_error(client.post("/v1/predict", json={"text": "crude oil"}), 413, "limit is 5")


def test_a_body_over_the_request_limit_is_413(text_bundle: Path) -> None:
    settings = ServingSettings(max_request_bytes=1000)
    with TestClient(create_app(text_bundle, settings)) as client:
        response = client.post("/v1/predict", json={"text": MEGABYTE_TEXT})
    assert_error(response, 413, "request body too large")


def test_too_many_texts_is_413(text_bundle: Path) -> None:
    with TestClient(create_app(text_bundle, ServingSettings(max_files=3))) as client:
        response = client.post("/v1/predict", json={"texts": ["a", "b", "c", "d"]})
    assert_error(response, 413, "too many texts: at most 3")


def test_a_compressed_json_body_is_415(client: TestClient) -> None:
    body = gzip.compress(json.dumps({"text": "crude oil"}).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    response = client.post("/v1/predict", content=body, headers=headers)
    assert_error(response, 415, "Content-Encoding 'gzip' is not supported")


def test_files_to_a_text_bundle_are_415(client: TestClient) -> None:
    response = client.post("/v1/predict", files=[("files", ("a.txt", b"hello"))])
    assert_error(response, 415, "multipart/form-data", "application/json")


def test_a_byte_order_mark_before_the_json_is_read_past(client: TestClient) -> None:
    body = json.dumps({"text": articles()[0]["text"]}).encode()
    plain = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    marked = client.post(
        "/v1/predict", content=b"\xef\xbb\xbf" + body, headers={"content-type": "application/json"}
    )
    assert plain.status_code == marked.status_code == 200
    assert marked.json()["predictions"][0]["label"] == plain.json()["predictions"][0]["label"]
    # with a byte order mark, or without one (as .NET and PowerShell clients send it)
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
        encoded = json.dumps({"text": articles()[0]["text"]}).encode(encoding)
        refused = client.post(
            "/v1/predict", content=encoded, headers={"content-type": "application/json"}
        )
        named = encoding[:6].upper()
        assert_error(refused, 422, f'it is {named} text; send UTF-8 like {{"texts"')


def test_openapi_documents_the_json_body(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert list(content) == ["application/json"]
    properties = content["application/json"]["schema"]["properties"]
    assert set(properties) == {"texts", "text"}
    assert properties["text"]["maxLength"] == ServingSettings().max_text_chars
