"""The start-up warning of a container memory limit that full request bodies can exceed, read
from real cgroup files written in a temporary folder (cgroup v2's and v1's layouts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfactory.serving.run import WORKER_BASE_BYTES, cgroup_memory_limit, memory_limit_warning
from mlfactory.serving.settings import DECODE_WORST_BYTES, ServingSettings

MIB = 1024 * 1024
GIB = 1024 * MIB
# What deploy/kubernetes/mlfactory.yaml sets for its 2 GiB limit.
MANIFEST = ServingSettings(max_request_bytes=32 * MIB, max_connections=32, max_concurrent_decodes=1)


def cgroup(root: Path, version: int, limit: str) -> Path:
    """A cgroup folder holding `limit` in the memory file of cgroup `version` (1 or 2)."""
    name = "memory.max" if version == 2 else "memory/memory.limit_in_bytes"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(f"{limit}\n")
    return root


@pytest.mark.parametrize("version", [1, 2])
def test_the_defaults_under_a_2_gib_limit_are_warned_of(tmp_path: Path, version: int) -> None:
    root = cgroup(tmp_path, version, str(2 * GIB))
    assert cgroup_memory_limit(root) == 2 * GIB
    warning = memory_limit_warning(ServingSettings(), 1, root)
    assert warning is not None
    assert warning.startswith("the memory limit (2048 MiB) is below what 1 worker(s) may hold")
    assert "MLFACTORY_MAX_CONNECTIONS=512" in warning
    assert "MLFACTORY_MAX_REQUEST_BYTES=104857600" in warning
    assert "MLFACTORY_MAX_CONCURRENT_DECODES=4 image decodes" in warning
    needed = 512 * 100 * MIB + 4 * DECODE_WORST_BYTES + WORKER_BASE_BYTES
    assert f"is {needed // MIB} MiB" in warning


def test_the_manifests_settings_fit_its_limit_for_one_worker_not_two(tmp_path: Path) -> None:
    root = cgroup(tmp_path, 2, str(2 * GIB))
    assert memory_limit_warning(MANIFEST, 1, root) is None
    assert memory_limit_warning(MANIFEST, 2, root) is not None  # each worker has its bodies
    two_decodes = ServingSettings(
        max_request_bytes=32 * MIB, max_connections=32, max_concurrent_decodes=2
    )
    assert memory_limit_warning(two_decodes, 1, root) is not None  # and its decoded images


@pytest.mark.parametrize(
    ("version", "limit"), [(2, "max"), (1, "9223372036854771712"), (2, "garbage")]
)
def test_no_limit_no_warning(tmp_path: Path, version: int, limit: str) -> None:
    root = cgroup(tmp_path, version, limit)
    assert cgroup_memory_limit(root) is None
    assert memory_limit_warning(ServingSettings(), 4, root) is None


def test_no_cgroup_files_no_warning(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path) is None
    assert memory_limit_warning(ServingSettings(), 1, tmp_path) is None
