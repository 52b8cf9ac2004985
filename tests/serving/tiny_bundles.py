"""Small real bundles of every modality, built in milliseconds without torch.

Each holds a tiny ONNX model written with `onnx.helper` (inputs cast, flattened and
concatenated, one tanh layer as the embedding, a softmax head) and the modality's real encoder
configuration: a real `tokenizer.json` for text, real log-mel parameters for audio. They serve
the tests that need every modality (bad-input corpus, schemathesis) or a second model version.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from mlfactory.bundle import MODEL_FILE, BundleMeta, load_bundle, write_meta

EMBEDDING_DIM = 8
TEXT_PARAMS = {"max_length": 12}
AUDIO_PARAMS = {
    "sample_rate": 8000,
    "clip_seconds": 0.5,
    "n_fft": 256,
    "hop_length": 128,
    "n_mels": 16,
}
AUDIO_FRAMES = 1 + 4000 // 128
IMAGE_PARAMS = {
    "resize_size": 16,
    "crop_size": 16,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
WORDS = ["oil", "wheat", "ship", "price", "crude", "grain", "port", "tanker", "the", "a"]


def write_tiny_model(
    path: Path, inputs: dict[str, tuple[list[int], int]], labels: int, unstable: bool = False
) -> None:
    """A model: named inputs {name: (shape without batch, onnx element type)} -> outputs.

    `unstable` makes the embedding `sqrt` of positive weights times the inputs instead of `tanh`:
    NaN for inputs whose features are mostly negative (dark images), like a model with a
    numerically fragile layer.
    """
    from onnx import TensorProto, checker, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    nodes, flats, width, graph_inputs = [], [], 0, []
    for name, (shape, element) in inputs.items():
        graph_inputs.append(helper.make_tensor_value_info(name, element, ["batch", *shape]))
        nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Flatten", [f"{name}_f"], [f"{name}_flat"], axis=1))
        flats.append(f"{name}_flat")
        width += math.prod(shape)
    hidden = rng.normal(0, 1 / math.sqrt(width), (width, EMBEDDING_DIM)).astype(np.float32)
    hidden = np.abs(hidden) if unstable else hidden
    head = rng.normal(0, 1, (EMBEDDING_DIM, labels)).astype(np.float32)
    nodes += [
        helper.make_node("Concat", flats, ["features"], axis=1),
        helper.make_node("MatMul", ["features", "hidden"], ["pre"]),
        helper.make_node("Sqrt" if unstable else "Tanh", ["pre"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        graph_inputs,
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", labels]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM]),
        ],
        initializer=[
            numpy_helper.from_array(hidden, "hidden"),
            numpy_helper.from_array(head, "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    checker.check_model(model)
    save(model, str(path))


def write_tokenizer(path: Path) -> None:
    """A word-level `tokenizer.json` with BERT-style special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])}
    vocab.update({word: index + 4 for index, word in enumerate(WORDS)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(path))


def tiny_bundle(
    folder: Path, modality: str, version: str = "1.0.0", unstable: bool = False
) -> Path:
    """Write a tiny `modality` bundle ("image", "text" or "audio") into `folder`.

    `unstable`: a model that answers NaN for some inputs (see `write_tiny_model`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    labels = {"text": ["crude", "grain", "ship"], "audio": ["bird", "frog"]}.get(
        modality, ["cat", "dog"]
    )
    params: dict[str, Any]
    if modality == "image":
        params = dict(IMAGE_PARAMS)
        inputs = {"pixel_values": ([3, 16, 16], 1)}  # 1: FLOAT
    elif modality == "text":
        params, length = dict(TEXT_PARAMS), TEXT_PARAMS["max_length"]
        inputs = {name: ([length], 7) for name in ("input_ids", "attention_mask")}  # 7: INT64
        write_tokenizer(folder / "tokenizer.json")
    elif modality == "audio":
        params = dict(AUDIO_PARAMS)
        inputs = {"log_mel": ([int(params["n_mels"]), AUDIO_FRAMES], 1)}  # 1: FLOAT
    else:
        raise ValueError(f"no tiny {modality} bundle")
    write_tiny_model(folder / MODEL_FILE, inputs, len(labels), unstable)
    meta = BundleMeta(
        name=f"tiny-{modality}",
        version=version,
        modality=modality,
        labels=labels,
        preprocessing=params,
    )
    write_meta(folder, meta)
    return folder


def copy_with_version(source: Path, target: Path, version: str) -> Path:
    """A copy of a bundle that differs only in its version."""
    shutil.copytree(source, target)
    bundle = load_bundle(target)
    bundle.meta.version = version
    bundle.save_meta()
    return target


def wav_bytes(seconds: float = 0.4, rate: int = 8000, frequency: float = 440.0) -> bytes:
    """A mono sine tone as WAV."""
    times = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * frequency * times)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
