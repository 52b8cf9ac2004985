"""The float32 kernels a training process computes with: what makes a retrained model differ.

Training is seeded and the split is by content hash, so on one kind of CPU the same command
trains the same model, bit for bit. torch (ATen and oneDNN), numpy and OpenBLAS choose their
kernels from the CPU when they start, and kernels that round differently make gradient descent
end in another, equally good, model (docs/numerics.md). Each run records the set it used (an
MLflow tag and `bundle.json`'s `export.float_kernels`), so two runs that differ can be told
apart.
"""

from __future__ import annotations

import importlib
import os

import torch
from threadpoolctl import threadpool_info


def float_kernels() -> str:
    """What this process dispatches to, as each library reports it.

    For example `torch AVX512, oneDNN best, numpy X86_V3 X86_V4 AVX512_ICL, openblas SkylakeX`
    on an AVX-512 machine; `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
    NPY_DISABLE_CPU_FEATURES=X86_V4` turn it into `torch AVX2, oneDNN AVX2, numpy X86_V3 ...`.
    """
    simd = importlib.import_module("numpy._core._multiarray_umath")
    enabled = [name for name in simd.__cpu_dispatch__ if simd.__cpu_features__.get(name)]
    parts = [
        f"torch {torch.backends.cpu.get_cpu_capability()}",
        f"oneDNN {os.environ.get('ONEDNN_MAX_CPU_ISA', 'best')}",
        f"numpy {' '.join(enabled) or 'baseline'}",
    ]
    for library in threadpool_info():
        if library.get("user_api") == "blas":
            parts.append(f"{library['internal_api']} {library.get('architecture') or '?'}")
    return ", ".join(parts)
