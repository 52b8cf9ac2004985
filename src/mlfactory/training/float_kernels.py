"""The float32 kernels a training process computes with, and its thread counts: what makes a
retrained model differ.

Training is seeded and the split is by content hash, so on one kind of CPU, with the same
number of threads, the same command trains the same model, bit for bit. torch (ATen and
oneDNN), numpy and OpenBLAS choose their kernels from the CPU when they start, and kernels that
round differently make gradient descent end in another, equally good, model
(docs/numerics.md). The thread count does the same: a sum split over 1 or 2 threads is added in
another order. Each run records both (an MLflow tag and `bundle.json`'s
`export.float_kernels`), so two runs that differ can be told apart.
"""

from __future__ import annotations

import importlib
import os

import torch
from threadpoolctl import threadpool_info

# What caps oneDNN's instruction set; torch does not say which one oneDNN chose.
ONEDNN_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def float_kernels() -> str:
    """What this process dispatches to, as each library reports it, and its threads.

    For example `torch AVX512, oneDNN max ISA not set, numpy X86_V3 X86_V4 AVX512_ICL,
    openblas SkylakeX, threads 8 (interop 8)` on an AVX-512 machine; `ATEN_CPU_CAPABILITY=avx2
    ONEDNN_MAX_CPU_ISA=AVX2 NPY_DISABLE_CPU_FEATURES=X86_V4` turn it into `torch AVX2, oneDNN
    AVX2, numpy X86_V3 ...`; `OMP_NUM_THREADS=1` into `threads 1 (...)`. A library loaded twice
    (numpy's OpenBLAS and scipy's) is named once per distinct kernel set.
    """
    simd = importlib.import_module("numpy._core._multiarray_umath")
    enabled = [name for name in simd.__cpu_dispatch__ if simd.__cpu_features__.get(name)]
    parts = [
        f"torch {torch.backends.cpu.get_cpu_capability()}",
        f"oneDNN {onednn_isa()}",
        f"numpy {' '.join(enabled) or 'baseline'}",
    ]
    for library in threadpool_info():
        if library.get("user_api") == "blas":
            blas = f"{library['internal_api']} {library.get('architecture') or '?'}"
            if blas not in parts:
                parts.append(blas)
    parts.append(f"threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    return ", ".join(parts)


def onednn_isa() -> str:
    """The instruction set oneDNN is capped at, as the environment sets it ("max ISA not set":
    oneDNN takes the best the CPU has; torch exposes no query of what it took)."""
    for name in ONEDNN_ISA_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return "max ISA not set"
