"""A seed-style prediction server: FastAPI, the torch model loaded once, run per request.

What a first prototype typically looks like, kept as the baseline: no batching, torchvision
preprocessing, the model called inside the `async` handler (so requests run one at a time on the
event loop; a sync handler would instead run several torch calls at once in the threadpool and
make them fight over the same cores). Same route and multipart field as mlfactory's API.

`--reload-per-request` does what the emotions seed actually shipped (SEEDS.md, seed 4): the
checkpoint is loaded again for every request.

    .venv/bin/python -m benchmarks.serving.seed_server --weights runs/bench/resnet18/torch \
        --port 8101
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import uvicorn
from benchmarks.serving.torch_model import build_transform, load_image, load_network, to_json
from fastapi import FastAPI, File, UploadFile


def create_app(weights_dir: Path, reload_per_request: bool = False) -> FastAPI:
    net, spec = load_network(weights_dir)
    transform = build_transform(spec["preprocessing"])
    labels: list[str] = spec["labels"]
    app = FastAPI(title="seed-style torch server")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(files: list[UploadFile] = File(...)) -> dict[str, Any]:
        predictions = []
        model = load_network(weights_dir)[0] if reload_per_request else net
        for upload in files:
            image = load_image(await upload.read())
            with torch.no_grad():
                probabilities, _ = model(transform(image).unsqueeze(0))
            predictions.extend(to_json(labels, probabilities))
        return {"predictions": predictions}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="seed-style FastAPI + torch server")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--reload-per-request", action="store_true", help="load the checkpoint for every request"
    )
    args = parser.parse_args()
    app = create_app(args.weights, args.reload_per_request)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
