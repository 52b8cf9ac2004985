"""The JSON path of `POST /v1/predict` for text bundles.

No text encoder exists yet, so this serves a tiny real ONNX model (built here with `onnx`)
through a stand-in encoder with the agreed interface: UTF-8 bytes in, `input_ids` out. Once
`modalities/text.py` lands, swap `fake_text_encoder` for a real text bundle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import mlfactory.bundle
from mlfactory.bundle import MODEL_FILE, BundleMeta, write_meta
from mlfactory.errors import InputError
from mlfactory.predictor import Predictor
from mlfactory.serving.app import create_app
from mlfactory.serving.settings import ServingSettings
from tests.numerics import assert_same_prediction

from .test_bad_inputs import assert_error

LENGTH = 8
LABELS = ["negative", "positive"]


class ByteTextEncoder:
    """Stand-in text encoder: the first LENGTH UTF-8 bytes as token ids (0-padded)."""

    modality = "text"

    def __init__(self, params: Mapping[str, Any], assets_dir: Path | None = None) -> None:
        self.length = int(params["max_length"])

    def __call__(self, raw: bytes) -> dict[str, np.ndarray]:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", 422) from None
        ids = np.zeros(self.length, dtype=np.int64)
        head = np.frombuffer(raw[: self.length], dtype=np.uint8)
        ids[: len(head)] = head
        return {"input_ids": ids}

    def input_shapes(self) -> dict[str, list[int]]:
        return {"input_ids": [self.length]}


def write_text_model(path: Path) -> None:
    """input_ids (N, LENGTH) int64 -> probabilities (N, 2), embedding (N, LENGTH)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # Early bytes push towards "positive", late ones towards "negative": short texts and long
    # texts get different labels, so the order of answers can be checked.
    weights = np.zeros((LENGTH, 2), dtype=np.float32)
    weights[0, 1], weights[LENGTH // 2 :, 1] = 0.05, -0.05
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["embedding"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["embedding", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "bytes_classifier",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", LENGTH])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", LENGTH]),
        ],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("text_bundle")
    write_text_model(folder / MODEL_FILE)
    meta = BundleMeta(
        name="bytes-test",
        version="0.1.0",
        modality="text",
        labels=LABELS,
        preprocessing={"max_length": LENGTH},
    )
    write_meta(folder, meta)
    return folder


@pytest.fixture
def text_client(text_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    real_get_encoder = mlfactory.bundle.get_encoder

    def get_encoder(modality: str, params: Mapping[str, Any], assets: Path | None = None) -> Any:
        if modality == "text":
            return ByteTextEncoder(params, assets)
        return real_get_encoder(modality, params, assets)

    monkeypatch.setattr(mlfactory.bundle, "get_encoder", get_encoder)
    settings = ServingSettings(max_files=3, max_text_chars=20)
    with TestClient(create_app(text_bundle, settings)) as client:
        yield client


def test_texts_are_classified_in_order(text_client: TestClient) -> None:
    texts = ["zzzzzzzz", "a", "héllo wörld"]
    response = text_client.post("/v1/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "bytes-test", "version": "0.1.0"}
    predictor: Predictor = text_client.app.state.predictor  # type: ignore[attr-defined]
    for text, prediction in zip(texts, body["predictions"], strict=True):
        [alone] = predictor.predict([text.encode("utf-8")])
        # A batch of 3 and a batch of 1 may run different fp32 kernels.
        assert_same_prediction(
            np.array(list(prediction["probabilities"].values())),
            np.array(list(alone.probabilities.values())),
        )
        assert list(prediction["probabilities"]) == LABELS
    assert len({p["label"] for p in body["predictions"]}) == 2  # the model tells them apart


def test_single_text_field(text_client: TestClient) -> None:
    response = text_client.post("/v1/predict", json={"text": "zzzz"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"texts": []}, 422, "'texts' is an empty list"),
        ({"texts": ["ok", "   "]}, 422, "text 1 is empty"),
        ({"texts": ["ok", "x" * 21]}, 413, "text 1 has 21 characters; the limit is 20"),
        ({"texts": ["a", "b", "c", "d"]}, 413, "too many texts: at most 3"),
        ({"text": "a", "texts": ["b"]}, 422, "exactly one of 'texts'"),
        ({}, 422, "exactly one of 'texts'"),
        ({"texts": "not a list"}, 422, "texts: Input should be a valid array"),
        ({"texts": [1, 2]}, 422, "texts.0: Input should be a valid string"),
        ({"txt": "typo"}, 422, "txt: Extra inputs are not permitted"),
    ],
)
def test_bad_json_bodies(text_client: TestClient, payload: Any, status: int, fragment: str) -> None:
    assert_error(text_client.post("/v1/predict", json=payload), status, fragment)


def test_invalid_json_is_422(text_client: TestClient) -> None:
    response = text_client.post(
        "/v1/predict", content=b"{texts: [", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid JSON body", "Invalid JSON")


def test_files_to_a_text_bundle_are_415(text_client: TestClient) -> None:
    response = text_client.post("/v1/predict", files=[("files", ("a.txt", b"hello"))])
    assert_error(response, 415, "multipart/form-data", "application/json")


def test_openapi_documents_the_json_body(text_client: TestClient) -> None:
    operation = text_client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert list(content) == ["application/json"]
    properties = content["application/json"]["schema"]["properties"]
    assert set(properties) == {"texts", "text"}
