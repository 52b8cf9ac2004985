"""The one inference path: inputs and outputs that are not finite numbers are refused by name;
a bundle that fails its modality's test input (`Predictor.check`) is refused as it loads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlfactory.bundle import load_bundle
from mlfactory.errors import BundleError, InputError
from mlfactory.predictor import BatchOutput, Predictor
from tests.serving.tiny_bundles import tiny_bundle

INPUTS = ("input_ids", "attention_mask")


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_input_the_model_answers_with_nan_is_refused_by_position(tmp_path: Path) -> None:
    predictor = Predictor.from_path(tiny_bundle(tmp_path / "b", "image", unstable=True))
    [white] = predictor.predict([png("white")])
    assert np.isfinite(white.score)
    with pytest.raises(InputError, match=r"^input 1: the model's output .* NaN") as caught:
        predictor.predict([png("white"), png("black"), png("white")])
    assert caught.value.status_code == 422


def test_bad_inputs_are_named_by_position(tmp_path: Path) -> None:
    predictor = Predictor.from_path(tiny_bundle(tmp_path / "b", "image"))
    with pytest.raises(InputError, match=r"^input 2: not an image"):
        predictor.predict([png("white"), png("red"), b"plain text"])


def test_non_finite_model_inputs_are_refused(tmp_path: Path) -> None:
    predictor = Predictor.from_path(tiny_bundle(tmp_path / "b", "image"))

    def overflowing(raw: bytes) -> dict[str, np.ndarray]:  # an encoder whose features overflow
        return {"pixel_values": np.full((3, 16, 16), np.inf, dtype=np.float32)}

    predictor.encoder = overflowing  # type: ignore[assignment]
    with pytest.raises(
        InputError, match="NaN or infinite values in the model input 'pixel_values'"
    ):
        predictor.encode(png("white"))


def test_check_finite_names_the_first_bad_row() -> None:
    output = BatchOutput(
        probabilities=np.array([[0.5, 0.5], [0.2, 0.8], [0.1, 0.9]], dtype=np.float32),
        embeddings=np.array([[0.0], [np.inf], [np.nan]], dtype=np.float32),
    )
    with pytest.raises(InputError, match=r"^b: "):
        Predictor.check_finite(output, ["a", "b", "c"])
    Predictor.check_finite(
        BatchOutput(output.probabilities, np.zeros((3, 1), np.float32)), ["a", "b", "c"]
    )


@pytest.mark.parametrize("modality", ["text", "audio"])
def test_text_and_audio_bundles_load_after_their_test_input_ran(
    modality: str, tmp_path: Path
) -> None:
    predictor = Predictor.from_path(tiny_bundle(tmp_path / "b", modality))
    raw = predictor.bundle.modality.test_input(predictor.bundle.meta.preprocessing)
    [prediction] = predictor.predict([raw])
    assert prediction.label in predictor.labels and np.isfinite(prediction.score)


def write_embedding_table_model(path: Path, rows: int, length: int, labels: int) -> None:
    """A text model that looks its token ids up in an embedding table of `rows` rows (masked
    mean, softmax head), as a transformer's first layer does: ids past the table fail."""
    from onnx import TensorProto, checker, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    ids, mask = (
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", length]) for n in INPUTS
    )
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last"], ["mask_3d"]),
        helper.make_node("Mul", ["tokens", "mask_3d"], ["masked"]),
        helper.make_node("ReduceMean", ["masked", "middle"], ["embedding"], keepdims=0),
        helper.make_node("MatMul", ["embedding", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "embedding_table_classifier",
        [ids, mask],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", labels]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4]),
        ],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(rows, 4)).astype(np.float32), "table"),
            numpy_helper.from_array(rng.normal(size=(4, labels)).astype(np.float32), "head"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "middle"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    checker.check_model(model)
    save(model, str(path))


def test_a_text_model_without_rows_for_its_tokenizers_ids_is_refused(tmp_path: Path) -> None:
    """A tokenizer from another backbone: all-zero ids ([PAD]) would pass; real words do not."""
    bundle = tiny_bundle(tmp_path / "b", "text")
    length = int(load_bundle(bundle).meta.preprocessing["max_length"])
    vocabulary = json.loads((bundle / "tokenizer.json").read_text())["model"]["vocab"]
    write_embedding_table_model(bundle / "model.onnx", len(vocabulary), length, 3)
    assert Predictor.from_path(bundle).labels == ["crude", "grain", "ship"]
    write_embedding_table_model(bundle / "model.onnx", 4, length, 3)  # special tokens only
    with pytest.raises(BundleError, match=r"model\.onnx fails on a test input: .*indices"):
        Predictor.from_path(bundle)


def test_an_audio_model_that_answers_a_plain_note_with_nan_is_refused(tmp_path: Path) -> None:
    """`sqrt` of log-mel levels (negative dB): NaN for any real sound, finite for silence."""
    bundle = tiny_bundle(tmp_path / "b", "audio", unstable=True)
    with pytest.raises(BundleError, match=r"model\.onnx answers a test input with NaN"):
        Predictor.from_path(bundle)
