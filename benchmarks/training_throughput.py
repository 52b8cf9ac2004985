"""Training throughput on a GPU: model step, input pipeline, and Lightning's overhead.

What it measures, in one run:

1. Model step (forward + cross-entropy + backward + AdamW step) of our `Classifier` built with
   `build_image_backbone`, for each backbone and for the variants fp32 eager, bf16 autocast,
   bf16 + channels_last, bf16 + channels_last + torch.compile. Inputs are real images encoded
   once by the serving `ImageEncoder` and kept on the device as a pool of batches that the
   loop cycles through, so the model is never waiting for input. Timed with CUDA events,
   after a warm-up (compilation excluded from the throughput, reported separately), median of
   repeats.
2. The input pipeline alone: `EncodedDataset` (PIL decode, resize, crop, normalise per item,
   the serving function) through a `DataLoader` with several worker counts and pin_memory, over
   real image files of about 500x375 written as JPEG and PNG; then the bare training loop fed by
   that DataLoader (did the data path keep the GPU busy?).
3. `Trainer.fit` of `ClassifierModule` with precision="bf16-mixed" for a fixed number of steps
   against the bare bf16 loop, over the same on-device batches.

The source images (`--images`) are a folder with a few photographs (*.jpg) and a `stamps/`
folder of Tux Paint stamps (*.png); the benchmark composes its 500x375 files from them.

GPU:   PYTHONPATH=src python3 benchmarks/training_throughput.py --images .bench_images --out $OUT
CPU:   PYTHONPATH=src python benchmarks/training_throughput.py --images .bench_images \
           --device cpu --quick

The full results go to `<out>/training_throughput.json`; a compact table is printed last.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

NUM_CLASSES = 10
FILE_SIZE = (500, 375)

# (label, bf16 autocast, channels_last, torch.compile, cudnn.benchmark)
VARIANTS: list[tuple[str, bool, bool, bool, bool]] = [
    ("fp32 eager", False, False, False, False),
    ("bf16 eager", True, False, False, False),
    ("bf16+CL eager", True, True, False, False),
    ("bf16+CL+compile", True, True, True, False),
]


# ----------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Clock:
    """Wall time since the start, against a deadline for the optional parts."""

    def __init__(self, deadline_s: float) -> None:
        self.start = time.perf_counter()
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, needed_s: float) -> bool:
        return self.elapsed() + needed_s <= self.deadline_s


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- image files


def _compose(args: tuple[int, list[str], list[str], str, int]) -> str:
    """One 500x375 image: a random crop of a photograph with one or two stamps pasted on."""
    index, photos, stamps, out_dir, quality = args
    rng = np.random.default_rng(index)
    photo = Image.open(photos[index % len(photos)]).convert("RGB")
    width, height = photo.size
    scale = rng.uniform(0.55, 1.0)
    crop_w = int(min(width, height * 4 / 3) * scale)
    crop_h = int(crop_w * 3 / 4)
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    canvas = photo.crop((left, top, left + crop_w, top + crop_h)).resize(
        FILE_SIZE, Image.Resampling.BILINEAR
    )
    if rng.random() < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for _ in range(int(rng.integers(1, 3))):
        stamp = Image.open(stamps[int(rng.integers(0, len(stamps)))]).convert("RGBA")
        side = int(rng.integers(120, 300))
        ratio = side / max(stamp.size)
        stamp = stamp.resize(
            (max(1, int(stamp.size[0] * ratio)), max(1, int(stamp.size[1] * ratio))),
            Image.Resampling.BILINEAR,
        )
        x = int(rng.integers(0, max(1, FILE_SIZE[0] - stamp.size[0])))
        y = int(rng.integers(0, max(1, FILE_SIZE[1] - stamp.size[1])))
        canvas.paste(stamp, (x, y), stamp)
    stem = Path(out_dir) / f"img{index:05d}"
    jpeg, png = f"{stem}.jpg", f"{stem}.png"
    canvas.save(jpeg, quality=quality)
    canvas.save(png)
    return jpeg


def make_files(source: Path, out_dir: Path, count: int, processes: int) -> dict[str, Any]:
    """Write `count` JPEG and `count` PNG files of 500x375 composed from the source images."""
    photos = sorted(str(p) for p in source.glob("*.jpg"))
    stamps = sorted(str(p) for p in (source / "stamps").rglob("*.png"))
    if not photos or not stamps:
        raise SystemExit(f"{source} needs *.jpg photographs and stamps/**/*.png")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(i, photos, stamps, str(out_dir), 90) for i in range(count)]
    started = time.perf_counter()
    with mp.get_context("fork").Pool(processes) as pool:
        pool.map(_compose, jobs, chunksize=4)
    jpegs = sorted(out_dir.glob("*.jpg"))
    pngs = sorted(out_dir.glob("*.png"))
    return {
        "count": count,
        "size": list(FILE_SIZE),
        "source_photos": [Path(p).name for p in photos],
        "source_stamps": len(stamps),
        "jpeg_mean_kib": round(sum(p.stat().st_size for p in jpegs) / len(jpegs) / 1024, 1),
        "png_mean_kib": round(sum(p.stat().st_size for p in pngs) / len(pngs) / 1024, 1),
        "write_s": round(time.perf_counter() - started, 2),
        "jpegs": [str(p) for p in jpegs],
        "pngs": [str(p) for p in pngs],
    }


_ENCODER: Any = None


def _encode(path: str) -> np.ndarray:
    from mlfactory.modalities.image import INPUT_NAME

    return _ENCODER(Path(path).read_bytes())[INPUT_NAME]


def encode_pool(paths: list[str], params: dict[str, Any], processes: int) -> np.ndarray:
    """Encode files with the serving ImageEncoder, once, in parallel: (N, 3, S, S) float32."""
    global _ENCODER
    from mlfactory.modalities.image import ImageEncoder

    _ENCODER = ImageEncoder(params)
    with mp.get_context("fork").Pool(processes) as pool:
        arrays = pool.map(_encode, paths, chunksize=8)
    return np.stack(arrays)


# ----------------------------------------------------------------------------- model step


def build_model(backbone: str, device: torch.device) -> nn.Module:
    from mlfactory.config.schema import ModelConfig
    from mlfactory.training.backbones.image import build_image_backbone
    from mlfactory.training.network import Classifier

    torch.manual_seed(0)
    # Random init: weights don't change the speed, and the GPU machine has no weights package.
    net, width = build_image_backbone(ModelConfig(backbone=backbone, pretrained="none"))
    return Classifier(net, width, NUM_CLASSES, dropout=0.2).to(device)


def make_step(
    model: nn.Module, amp: bool, compiled: bool, device: torch.device
) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.optim.Optimizer]:
    """One training step as ClassifierModule does it: CE loss, AdamW (torch defaults)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    forward = torch.compile(model) if compiled else model

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step, optimizer


def time_steps(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    offset: int,
    device: torch.device,
) -> tuple[float, torch.Tensor]:
    """Seconds for `steps` steps, timed with CUDA events (host clock on the CPU)."""
    loss = torch.zeros(())
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for k in range(steps):
            loss = step(*batches[(offset + k) % len(batches)])
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, loss
    started = time.perf_counter()
    for k in range(steps):
        loss = step(*batches[(offset + k) % len(batches)])
    return time.perf_counter() - started, loss


def bench_model(
    backbone: str,
    variant: tuple[str, bool, bool, bool, bool],
    pool: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    warmup: int,
    repeats: int,
    steps: int,
    reference: torch.Tensor | None,
    device: torch.device,
) -> dict[str, Any]:
    name, amp, channels_last, compiled, cudnn_bm = variant
    torch.backends.cudnn.benchmark = cudnn_bm
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(backbone, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=memory_format)
    inputs = pool.contiguous(memory_format=memory_format)
    batches = [
        (inputs[s : s + batch], labels[s : s + batch])
        for s in range(0, pool.shape[0] - batch + 1, batch)
    ]
    result: dict[str, Any] = {"backbone": backbone, "variant": name, "batch": batch}

    # Agreement with fp32 at init (eval mode, uncompiled module, the first 32 images).
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(inputs[:32]).float()
    if reference is not None:
        result["init_logits_rel_err_vs_fp32"] = float(
            (logits - reference).norm() / reference.norm()
        )
    model.train()

    step, _ = make_step(model, amp, compiled, device)
    sync(device)
    started = time.perf_counter()
    first_loss = step(*batches[0])
    sync(device)
    result["first_step_s"] = round(time.perf_counter() - started, 3)
    result["first_loss"] = float(first_loss)
    for k in range(1, warmup):
        step(*batches[k % len(batches)])
    sync(device)
    times = []
    loss = first_loss
    for r in range(repeats):
        seconds, loss = time_steps(step, batches, steps, warmup + r * steps, device)
        times.append(seconds)
    median = statistics.median(times)
    result.update(
        repeats=repeats,
        steps_per_repeat=steps,
        step_ms=round(median / steps * 1000, 2),
        images_per_s=round(batch * steps / median, 1),
        spread_pct=round((max(times) - min(times)) / median * 100, 1),
        last_loss=float(loss),
        finite=bool(math.isfinite(float(loss))),
    )
    if compiled:
        result["compile_s"] = round(result["first_step_s"] - median / steps, 1)
    if device.type == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model, step, batches, inputs
    if compiled:
        torch._dynamo.reset()
    torch.backends.cudnn.benchmark = False
    free(device)
    return result


def reference_logits(backbone: str, pool: torch.Tensor, device: torch.device) -> torch.Tensor:
    model = build_model(backbone, device).eval()
    with torch.no_grad():
        out = model(pool[:32]).float()
    del model
    return out


# ----------------------------------------------------------------------------- input pipeline


def make_loader(
    paths: list[str], params: dict[str, Any], batch: int, workers: int, pin: bool, length: int
) -> DataLoader:
    """Our training dataset over `length` items cycling through `paths`, in a DataLoader."""
    from mlfactory.data.dataset import Item
    from mlfactory.modalities.image import ImageEncoder
    from mlfactory.training.datamodule import EncodedDataset

    items = [
        Item(key=str(i), label=f"c{i % NUM_CLASSES}", split="train", path=paths[i % len(paths)])
        for i in range(length)
    ]
    label_index = {f"c{i}": i for i in range(NUM_CLASSES)}
    return DataLoader(
        EncodedDataset(items, ImageEncoder(params), label_index),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(0),
        drop_last=True,
    )


def bench_loader(
    paths: list[str],
    params: dict[str, Any],
    batch: int,
    workers: int,
    pin: bool,
    window_s: float,
    consume: Callable[[dict[str, torch.Tensor], torch.Tensor], None] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Images/s delivered by the DataLoader in steady state (after 2*workers+1 batches).

    With `consume`, each batch is handed to it (a training step), which measures the loop fed
    by the loader rather than the loader alone.
    """
    skip = 2 * workers + 1
    loader = make_loader(paths, params, batch, workers, pin, length=200_000)
    started = time.perf_counter()
    iterator: Iterator[Any] = iter(loader)
    first_batch_s = None
    t0 = None
    images = 0
    seen = 0
    now = started
    for index, (inputs, labels) in enumerate(iterator):
        if consume is not None:
            consume(inputs, labels)
        now = time.perf_counter()
        if index == 0:
            first_batch_s = now - started
        if index == skip - 1:
            if consume is not None and device is not None:
                sync(device)
                now = time.perf_counter()
            t0 = now
        elif t0 is not None:
            images += labels.shape[0]
            seen += 1
            if now - t0 >= window_s:
                break
    if consume is not None and device is not None:
        sync(device)
        now = time.perf_counter()
    del iterator
    assert t0 is not None and seen > 0
    return {
        "workers": workers,
        "batch": batch,
        "pin_memory": pin,
        "first_batch_s": round(first_batch_s or 0.0, 2),
        "measured_batches": seen,
        "window_s": round(now - t0, 2),
        "images_per_s": round(images / (now - t0), 1),
    }


# ----------------------------------------------------------------------------- Lightning


class _DeviceBatches(IterableDataset):  # type: ignore[type-arg]
    """Endless batches that already sit on the device (Lightning's transfer is a no-op)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        k = 0
        while True:
            x, y = self.batches[k % len(self.batches)]
            yield {"pixel_values": x}, y
            k += 1


def bench_lightning(
    backbone: str,
    pool: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    warmup: int,
    steps: int,
    device: torch.device,
) -> dict[str, Any]:
    import lightning as L

    from mlfactory.training.module import ClassifierModule

    torch.backends.cudnn.benchmark = False
    marks: dict[str, float] = {}

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, b: Any, batch_idx: int) -> None:
            if batch_idx == warmup:
                sync(device)
                marks["t0"] = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, module: Any, out: Any, b: Any, batch_idx: int
        ) -> None:
            if batch_idx == warmup + steps - 1:
                sync(device)
                marks["t1"] = time.perf_counter()

    batches = [
        (pool[s : s + batch], labels[s : s + batch])
        for s in range(0, pool.shape[0] - batch + 1, batch)
    ]
    module = ClassifierModule(
        build_model(backbone, device), NUM_CLASSES, lr=1e-3, weight_decay=1e-4, max_epochs=1
    )
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=warmup + steps,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timer()],
    )
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(_DeviceBatches(batches), batch_size=None))
    total = time.perf_counter() - started
    seconds = marks["t1"] - marks["t0"]
    del module, trainer
    free(device)
    return {
        "backbone": backbone,
        "batch": batch,
        "warmup_steps": warmup,
        "steps": steps,
        "fit_total_s": round(total, 2),
        "step_ms": round(seconds / steps * 1000, 2),
        "images_per_s": round(batch * steps / seconds, 1),
    }


# ----------------------------------------------------------------------------- main


def environment(device: torch.device) -> dict[str, Any]:
    import lightning
    import timm

    env: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sms=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=Path(".bench_images"))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    parser.add_argument("--models", default="efficientnet_lite0,resnet50")
    parser.add_argument("--variants", default="all", help="comma-separated variant labels")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--files", type=int, default=1024, help="files of each format")
    parser.add_argument("--workers", default="0,4,8,14")
    parser.add_argument("--png-workers", default="0,14")
    parser.add_argument("--window", type=float, default=8.0, help="seconds per loader measure")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--deadline", type=float, default=540.0, help="skip optional parts after")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--cpu-compile", action="store_true", help="also compile on the CPU")
    parser.add_argument("--no-lightning", action="store_true")
    parser.add_argument(
        "--parts", default="model,pipeline,fed,lightning", help="which parts to run"
    )
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mlfactory_bench"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out")))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.files, args.window = 4, 16, 1.0
        args.repeats, args.steps, args.warmup = 1, 1, 1
        args.workers, args.png_workers = "0,1", "0"
        args.deadline = float("inf")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock(args.deadline)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --device cpu --quick")
    from mlfactory.modalities.image import ImagePreprocessing

    pre = ImagePreprocessing()
    if args.quick:
        pre.resize_size, pre.crop_size = 72, 64
    params = {"resize_size": pre.resize_size, "crop_size": pre.crop_size}
    params.update(mean=pre.mean, std=pre.std)
    models = [m for m in args.models.split(",") if m]
    cores = os.cpu_count() or 1
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "env": environment(device),
        "args": {k: str(v) for k, v in vars(args).items()},
        "preprocessing": params,
        "model_step": [],
        "pipeline": [],
        "fed": [],
        "lightning": [],
        "errors": [],
        "skipped": [],
    }
    json_path = args.out / "training_throughput.json"

    def save() -> None:
        report["elapsed_s"] = round(clock.elapsed(), 1)
        json_path.write_text(json.dumps(report, indent=2))

    def attempt(section: str, label: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            row = fn()
            report[section].append(row)
            log(f"{section} {label}: {json.dumps(row)}")
        except Exception as exc:  # keep going: one failure must not lose the other figures
            report["errors"].append({"section": section, "label": label, "error": repr(exc)})
            log(f"{section} {label} FAILED: {exc!r}")
            traceback.print_exc()
        free(device)
        save()

    log(f"env: {json.dumps(report['env'])}")
    files_dir = args.work_dir / "files"
    files = make_files(args.images, files_dir, args.files, processes=cores)
    report["files"] = {k: v for k, v in files.items() if k not in ("jpegs", "pngs")}
    log(f"files: {json.dumps(report['files'])}")

    # --- 1. model step on an on-device pool of encoded real images
    started = time.perf_counter()
    pool_np = encode_pool(files["jpegs"], params, processes=cores)
    report["pool"] = {
        "images": int(pool_np.shape[0]),
        "shape": list(pool_np.shape[1:]),
        "encode_s": round(time.perf_counter() - started, 2),
    }
    pool = torch.from_numpy(pool_np).to(device)
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, NUM_CLASSES, len(pool))).to(
        device
    )
    del pool_np
    parts = set(args.parts.split(","))
    chosen = [v for v in VARIANTS if args.variants == "all" or v[0] in args.variants.split(",")]
    if "model" not in parts:
        chosen = []
    eager = [v for v in chosen if not v[3]]
    compiled = [v for v in chosen if v[3]]
    references: dict[str, torch.Tensor] = {}

    def model_case(backbone: str, variant: tuple[str, bool, bool, bool, bool]) -> dict[str, Any]:
        return bench_model(
            backbone, variant, pool, labels, args.batch, args.warmup, args.repeats, args.steps,
            references[backbone], device,
        )  # fmt: skip

    for backbone in models if chosen else []:
        references[backbone] = reference_logits(backbone, pool, device)
        for variant in eager:
            attempt(
                "model_step",
                f"{backbone} {variant[0]}",
                lambda b=backbone, v=variant: model_case(b, v),
            )

    # --- 2. input pipeline alone, then the loop fed by it
    pin = device.type == "cuda"
    loaders = (("jpeg", args.workers), ("png", args.png_workers)) if "pipeline" in parts else ()
    for fmt, worker_list in loaders:
        paths = files["jpegs" if fmt == "jpeg" else "pngs"]
        for workers in [int(w) for w in worker_list.split(",") if w]:
            if workers >= cores:
                report["skipped"].append(f"pipeline {fmt} workers={workers}: {cores} cores")
                continue

            def run_loader(p: list[str] = paths, w: int = workers, f: str = fmt) -> dict[str, Any]:
                row = bench_loader(p, params, args.batch, w, pin, args.window)
                return {"format": f, **row}

            attempt("pipeline", f"{fmt} workers={workers}", run_loader)

    fed_workers = max(int(w) for w in args.workers.split(",") if w)
    fed_workers = min(fed_workers, max(0, cores - 2))
    for backbone in models if "fed" in parts else []:
        if not clock.allows(40):
            report["skipped"].append(f"fed loop {backbone}: deadline")
            continue

        def run_fed(b: str = backbone) -> dict[str, Any]:
            torch.backends.cudnn.benchmark = False
            model = build_model(b, device).to(memory_format=torch.channels_last)
            step, _ = make_step(model, amp=True, compiled=False, device=device)

            def consume(inputs: dict[str, torch.Tensor], y: torch.Tensor) -> None:
                x = inputs["pixel_values"].to(device, non_blocking=True)
                step(
                    x.contiguous(memory_format=torch.channels_last), y.to(device, non_blocking=True)
                )

            row = bench_loader(
                files["jpegs"], params, args.batch, fed_workers, pin, args.window, consume, device
            )
            return {"backbone": b, "variant": "bf16+CL eager", "format": "jpeg", **row}

        attempt("fed", f"{backbone} workers={fed_workers}", run_fed)

    # --- 1b. torch.compile variants (compilation is slow: after the cheaper parts)
    for backbone in models:
        for variant in compiled:
            if args.no_compile:
                report["skipped"].append(f"{backbone} {variant[0]}: --no-compile")
                continue
            if device.type == "cpu" and not args.cpu_compile:
                report["skipped"].append(f"{backbone} {variant[0]}: CPU without --cpu-compile")
                continue
            if not clock.allows(150):
                report["skipped"].append(f"{backbone} {variant[0]}: deadline")
                continue
            attempt(
                "model_step",
                f"{backbone} {variant[0]}",
                lambda b=backbone, v=variant: model_case(b, v),
            )

    # --- 3. Lightning Trainer.fit (bf16-mixed) over the same on-device batches
    for backbone in models if "lightning" in parts else []:
        if args.no_lightning:
            report["skipped"].append(f"lightning {backbone}: --no-lightning")
            continue
        if not clock.allows(45):
            report["skipped"].append(f"lightning {backbone}: deadline")
            continue
        attempt(
            "lightning",
            backbone,
            lambda b=backbone: bench_lightning(
                b, pool, labels, args.batch, args.warmup, args.repeats * args.steps, device
            ),
        )

    save()
    print_table(report)
    log(f"full results: {json_path}")
    return 0


def print_table(report: dict[str, Any]) -> None:
    env = report["env"]
    rows = report["model_step"]
    print()
    print(
        f"== {env.get('gpu', env['device'])} | torch {env['torch']} | {env['cpu_count']} CPUs | "
        f"{report['pool']['shape'][-1]} px | {env['date_utc']} UTC | {report['elapsed_s']} s"
    )
    print("model step (fwd+bwd+AdamW), median of repeats")
    print(
        f"{'backbone':<19}{'variant':<18}{'batch':>6}{'img/s':>9}{'x fp32':>8}{'ms':>8}"
        f"{'spread%':>8}{'GiB':>7}{'compile s':>10}{'relerr':>8}"
    )
    base = {r["backbone"]: r["images_per_s"] for r in rows if r["variant"] == "fp32 eager"}
    best: dict[str, Any] = {}
    for r in rows:
        ratio = r["images_per_s"] / base[r["backbone"]] if r["backbone"] in base else float("nan")
        err = r.get("init_logits_rel_err_vs_fp32")
        print(
            f"{r['backbone']:<19}{r['variant']:<18}{r['batch']:>6}{r['images_per_s']:>9.0f}"
            f"{ratio:>8.2f}{r['step_ms']:>8.1f}{r['spread_pct']:>8.1f}"
            f"{r.get('peak_gib', float('nan')):>7.1f}{r.get('compile_s', ''):>10}"
            f"{'' if err is None else f'{err:.0e}':>8}"
        )
        if r["backbone"] not in best or r["images_per_s"] > best[r["backbone"]]["images_per_s"]:
            best[r["backbone"]] = r
    top = max(best.values(), key=lambda r: r["images_per_s"]) if best else None
    slow = min(best.values(), key=lambda r: r["images_per_s"]) if best else None
    print("input pipeline alone: EncodedDataset -> DataLoader(pin_memory), img/s")
    for r in report["pipeline"]:
        against = ""
        for ref in [] if top is None or slow is None else [top] + [slow] * (slow is not top):
            against += (
                f"{'  =' if not against else ','} {r['images_per_s'] / ref['images_per_s']:.2f} x"
                f" best {ref['backbone']} ({ref['images_per_s']:.0f})"
            )
        print(
            f"  {r['format']:<5} workers={r['workers']:<3}{r['images_per_s']:>8.0f}  "
            f"(first batch {r['first_batch_s']} s){against}"
        )
    for r in report["fed"]:
        alone = next(
            (
                m["images_per_s"]
                for m in rows
                if m["backbone"] == r["backbone"] and m["variant"] == r["variant"]
            ),
            float("nan"),
        )
        print(
            f"fed loop {r['backbone']} {r['variant']} workers={r['workers']}: "
            f"{r['images_per_s']:.0f} img/s = {r['images_per_s'] / alone:.2f} x the same step "
            f"on on-device data ({alone:.0f})"
        )
    for r in report["lightning"]:
        bare = next(
            (
                m["images_per_s"]
                for m in rows
                if m["backbone"] == r["backbone"] and m["variant"] == "bf16 eager"
            ),
            float("nan"),
        )
        print(
            f"lightning fit bf16-mixed {r['backbone']}: {r['images_per_s']:.0f} img/s "
            f"({r['step_ms']} ms/step) = {r['images_per_s'] / bare:.2f} x bare bf16 eager "
            f"({bare:.0f})"
        )
    for s in report["skipped"]:
        print(f"skipped: {s}")
    for e in report["errors"]:
        print(f"ERROR {e['section']} {e['label']}: {e['error'][:200]}")


if __name__ == "__main__":
    sys.exit(main())
