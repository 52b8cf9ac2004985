"""The kernel set a training process reports: what it chose, and what the environment forced."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlfactory.training.float_kernels import float_kernels

FORCED_AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4",
}
CPU_FLAGS = Path("/proc/cpuinfo").read_text() if sys.platform.startswith("linux") else ""
SHOW = "from mlfactory.training.float_kernels import float_kernels; print(float_kernels())"


def kernels_in_subprocess(extra: dict[str, str]) -> str:
    """float_kernels() of a fresh process: the libraries choose their kernels at import."""
    env = {k: v for k, v in os.environ.items() if k not in FORCED_AVX2}
    done = subprocess.run(
        [sys.executable, "-c", SHOW],
        env={**env, **extra},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip()


def test_names_every_library_and_the_blas() -> None:
    importlib.import_module("scipy.linalg")  # loads a second OpenBLAS, of the same kernels
    parts = float_kernels().split(", ")
    assert [p.split(" ")[0] for p in parts[:3]] == ["torch", "oneDNN", "numpy"]
    assert any(p.startswith("openblas ") for p in parts[3:]), parts  # numpy's BLAS
    assert len(set(parts)) == len(parts), parts  # scipy's OpenBLAS, as numpy's, named once


def test_the_thread_count_is_part_of_the_record() -> None:
    # Sums split over another number of threads round otherwise: another model.
    one = kernels_in_subprocess({"OMP_NUM_THREADS": "1"})
    two = kernels_in_subprocess({"OMP_NUM_THREADS": "2"})
    assert one.split(", ")[-1].startswith("threads 1 ")
    assert two.split(", ")[-1].startswith("threads 2 ")
    assert one.split(", ")[:-1] == two.split(", ")[:-1]


@pytest.mark.skipif(
    "avx2" not in CPU_FLAGS.split(),
    reason="forcing AVX2 kernels needs an x86-64 CPU with AVX2 (this project's machines)",
)
def test_forcing_avx2_shows_in_the_record() -> None:
    forced = kernels_in_subprocess(FORCED_AVX2)
    torch_part, onednn_part, numpy_part = forced.split(", ")[:3]
    assert torch_part == "torch AVX2"
    assert onednn_part == "oneDNN AVX2"
    assert "X86_V4" not in numpy_part.split() and "X86_V3" in numpy_part.split()
    default = kernels_in_subprocess({})
    assert default.split(", ")[1] == "oneDNN max ISA not set"
    if "avx512f" in CPU_FLAGS.split():  # an AVX-512 machine picks more by default
        assert default != forced
