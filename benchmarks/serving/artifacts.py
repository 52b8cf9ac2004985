"""What the serving benchmark runs on: request images, a resnet18 bundle, its torch weights.

Everything is built once and cached under the cache folder (default `runs/bench/`):

    images/*.jpg           real pictures: Tux Paint stamps composited on white, about 500x375
    resnet18/bundle/       `export_bundle` output (model.onnx + bundle.json), 224 px, 10 labels
    resnet18/torch/        the same network's weights (safetensors) + network.json, for the
                           torch servers

The network is a random-init timm resnet18 with mlfactory's head: throughput and latency do not
depend on the weights. Accuracy (int8 vs fp32) is measured on a trained bundle instead, see
`quantize.py`. Run as a script, this module builds what is missing (torch is imported here only,
so the orchestrator process stays free of it):

    .venv/bin/python -m benchmarks.serving.artifacts --cache runs/bench
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from PIL import Image

STAMPS = Path("tests/fixtures/tuxpaint/stamps")
IMAGE_SIZE = (500, 375)
IMAGES_PER_STAMP = 4
BACKBONE = "resnet18"
NUM_LABELS = 10
PREPROCESSING = {
    "resize_size": 256,
    "crop_size": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
SEED = 0


def images_dir(cache: Path) -> Path:
    return cache / "images"


def bundle_dir(cache: Path) -> Path:
    return cache / BACKBONE / "bundle"


def int8_bundle_dir(cache: Path) -> Path:
    """Where `quantize.py` writes the int8 variant of the bundle."""
    return bundle_dir(cache).with_name("bundle-int8")


def torch_dir(cache: Path) -> Path:
    return cache / BACKBONE / "torch"


def build_images(out: Path, stamps: Path = STAMPS) -> list[Path]:
    """Compose JPEG request payloads from the stamp PNGs (cached: kept if already there).

    Each stamp is scaled to a random 50-90% of the picture height and pasted at a random place on
    a white 500x375 canvas, so the files decode like ordinary photos of that size.
    """
    existing = sorted(out.glob("*.jpg"))
    if existing:
        return existing
    sources = sorted(stamps.rglob("*.png"))
    if not sources:
        raise SystemExit(f"no stamp PNGs under {stamps}: run from the repository root")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    written = []
    for source in sources:
        stamp = Image.open(source).convert("RGBA")
        for index in range(IMAGES_PER_STAMP):
            canvas = Image.new("RGBA", IMAGE_SIZE, (255, 255, 255, 255))
            height = int(IMAGE_SIZE[1] * rng.uniform(0.5, 0.9))
            width = max(1, int(stamp.width * height / stamp.height))
            width = min(width, IMAGE_SIZE[0])
            scaled = stamp.resize((width, height), Image.Resampling.LANCZOS)
            left = rng.randint(0, IMAGE_SIZE[0] - width)
            top = rng.randint(0, IMAGE_SIZE[1] - height)
            canvas.alpha_composite(scaled, (left, top))
            target = out / f"{source.stem}_{index}.jpg"
            canvas.convert("RGB").save(target, "JPEG", quality=90)
            written.append(target)
    return sorted(written)


def build_resnet18(cache: Path) -> Path:
    """Export a random-init resnet18 classifier as a bundle, and save its torch weights."""
    import torch
    from safetensors.torch import save_file

    from mlfactory.bundle import BundleMeta, load_bundle
    from mlfactory.config.schema import ModelConfig
    from mlfactory.data.dataset import Item
    from mlfactory.modalities import get_modality
    from mlfactory.training.backbones.image import build_image_backbone
    from mlfactory.training.export import export_bundle
    from mlfactory.training.network import Classifier

    bundle_path, weights_path = bundle_dir(cache), torch_dir(cache)
    if (bundle_path / "model.onnx").is_file() and (weights_path / "network.json").is_file():
        return bundle_path
    torch.manual_seed(SEED)
    backbone, width = build_image_backbone(ModelConfig(backbone=BACKBONE, pretrained="none"))
    dropout = 0.2
    net = Classifier(backbone, width, NUM_LABELS, dropout).eval()
    labels = [f"class_{i}" for i in range(NUM_LABELS)]
    meta = BundleMeta(
        name=f"bench-{BACKBONE}",
        version="1",
        modality="image",
        labels=labels,
        preprocessing=dict(PREPROCESSING),
        config={"model": {"backbone": BACKBONE, "pretrained": "none"}},
    )
    images = build_images(images_dir(cache))
    parity = [
        Item(
            key=hashlib.sha256(p.read_bytes()).hexdigest(),
            label=labels[0],
            split="test",
            path=str(p),
        )
        for p in images[:8]
    ]
    encoder = get_modality("image").encoder(PREPROCESSING)
    export_bundle(net, encoder, meta, bundle_path, parity)
    weights_path.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(weights_path / "classifier.safetensors"),
    )
    (weights_path / "network.json").write_text(
        json.dumps(
            {
                "backbone": BACKBONE,
                "num_labels": NUM_LABELS,
                "dropout": dropout,
                "embedding_dim": width,
                "labels": labels,
                "preprocessing": PREPROCESSING,
            },
            indent=2,
        )
        + "\n"
    )
    load_bundle(bundle_path)  # fail here, not in a server, if the bundle is incomplete
    return bundle_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    images = build_images(images_dir(args.cache))
    bundle = build_resnet18(args.cache)
    print(json.dumps({"images": len(images), "bundle": str(bundle)}))


if __name__ == "__main__":
    main()
