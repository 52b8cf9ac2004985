"""LitServe serving the benchmark network with batching: on ONNX Runtime, or on torch.

`--backend ort` runs the very bundle mlfactory serves, through mlfactory's `Predictor` (same
ONNX Runtime session options, same preprocessing code); `--backend torch` runs the same weights
in PyTorch with torchvision preprocessing. LitServe decodes requests in its inference worker,
gathers up to `--max-batch-size` of them for at most `--batch-timeout` seconds, and runs one
batched call (its documented batching set-up). Same route and multipart field as mlfactory.

    .venv/bin/python -m benchmarks.serving.litserve_server --backend ort \
        --bundle runs/bench/resnet18/bundle --port 8102
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np


# `decode_request` leaves `request` unannotated on purpose: LitServe reads that annotation to
# decide how to parse the body, and only "none" means "the raw request, form data included".
def _upload_bytes(request: Any) -> bytes:
    upload = request["files"]
    data = upload.file.read() if hasattr(upload, "file") else upload
    return bytes(data)


class OrtAPI(ls.LitAPI):
    """The mlfactory bundle on ONNX Runtime."""

    def __init__(self, bundle: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bundle_path = bundle

    def setup(self, device: str) -> None:
        from mlfactory.predictor import Predictor

        self.predictor = Predictor.from_path(self.bundle_path)

    def decode_request(self, request) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
        return self.predictor.encode(_upload_bytes(request))

    def batch(self, inputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return inputs

    def predict(self, inputs: list[dict[str, np.ndarray]]) -> np.ndarray:
        return self.predictor.run(inputs).probabilities

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, row: np.ndarray) -> dict[str, Any]:
        prediction = self.predictor.to_predictions(row[None, :])[0]
        return {"predictions": [prediction.to_json()]}


class TorchAPI(ls.LitAPI):
    """The same network in PyTorch, torchvision preprocessing."""

    def __init__(self, weights: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights = weights

    def setup(self, device: str) -> None:
        from benchmarks.serving.torch_model import build_transform, load_network

        self.net, spec = load_network(self.weights)
        self.transform = build_transform(spec["preprocessing"])
        self.labels = spec["labels"]

    def decode_request(self, request) -> Any:  # type: ignore[no-untyped-def]
        from benchmarks.serving.torch_model import load_image

        return self.transform(load_image(_upload_bytes(request)))

    def batch(self, inputs: list[Any]) -> Any:
        import torch

        return torch.stack(inputs)

    def predict(self, batch: Any) -> Any:
        import torch

        with torch.inference_mode():
            probabilities, _ = self.net(batch)
        return probabilities

    def unbatch(self, output: Any) -> list[Any]:
        return list(output)

    def encode_response(self, row: Any) -> dict[str, Any]:
        from benchmarks.serving.torch_model import to_json

        return {"predictions": to_json(self.labels, row[None, :])}


def main() -> None:
    parser = argparse.ArgumentParser(description="LitServe benchmark server")
    parser.add_argument("--backend", choices=["ort", "torch"], required=True)
    parser.add_argument("--bundle", type=Path, help="bundle folder (--backend ort)")
    parser.add_argument("--weights", type=Path, help="torch weights folder (--backend torch)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    options = {
        "max_batch_size": args.max_batch_size,
        "batch_timeout": args.batch_timeout,
        "api_path": "/v1/predict",
    }
    api: ls.LitAPI
    if args.backend == "ort":
        api = OrtAPI(args.bundle, **options)
    else:
        api = TorchAPI(args.weights, **options)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
