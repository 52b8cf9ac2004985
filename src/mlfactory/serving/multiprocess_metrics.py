"""Metrics that are true across worker processes (prometheus-client's multiprocess mode).

With `mlfactory serve --workers N`, every worker counts the requests it answers, and a scrape
reaches one worker. So that a scrape shows the whole server, each worker writes its values to
memory-mapped files in one folder, `PROMETHEUS_MULTIPROC_DIR`, and `/metrics` merges the files
of every worker: counters and histograms are summed, gauges follow their `multiprocess_mode`.

prometheus-client picks this mode when it is *imported*, from the environment, so the variable
must be set before a worker starts: `run_server` does it (`metrics_dir`) before uvicorn spawns
its workers, with a fresh folder per server start (old files would add up with new ones).
A worker that stops cleanly marks itself dead; one killed outright is found dead at the next
scrape (`prune_dead_workers`), reaped or not. Either way its `live*` gauges (queue depth, ...)
disappear, while its counters stay counted: requests it answered were answered.

prometheus-client's process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
...) describe the one process that answers a scrape, so multiprocess mode leaves them out; a
scrape here shows them for every live worker instead, each with its `pid` label
(`WorkerProcesses`).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from mlfactory.errors import ConfigError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The files of `live*` gauges, which name the process that wrote them.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> Path | None:
    """The folder of multiprocess metrics, or None when this process counts on its own.

    prometheus-client read the same variable when it was imported; the server sets it only
    before its workers start, so both agree.
    """
    folder = os.environ.get(MULTIPROC_ENV, "").strip()
    return Path(folder) if folder else None


def _unwritable(exc: OSError) -> str:
    return (
        f"the workers share their metrics in files, and no folder for them can be written "
        f"({exc.strerror or exc}): set {MULTIPROC_ENV} to a writable folder (in Kubernetes, "
        "an emptyDir volume mounted there), or serve with one worker"
    )


@contextmanager
def metrics_dir(workers: int) -> Iterator[Path | None]:
    """Set up the multiprocess folder for one server start, and clean it up afterwards.

    With `PROMETHEUS_MULTIPROC_DIR` already set (by the user or an orchestrator), that folder is
    created if needed and emptied of old metric files. Otherwise, with more than one worker, a
    new temporary folder is made, named in the environment the workers inherit, and removed
    when the server stops. One worker and no variable: nothing to do (None).

    Raises:
        ConfigError: the folder cannot be made or emptied (a read-only file system), named
            with how to give a writable one.
    """
    given = multiprocess_dir()
    if given is not None:
        try:
            given.mkdir(parents=True, exist_ok=True)
            for old in given.glob("*.db"):
                old.unlink()
        except OSError as exc:
            raise ConfigError(f"{MULTIPROC_ENV}={given}: {_unwritable(exc)}") from None
        yield given
        return
    if workers <= 1:
        yield None
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix="mlfactory-metrics-"))
    except OSError as exc:
        raise ConfigError(f"--workers {workers}: {_unwritable(exc)}") from None
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def prune_dead_workers(folder: Path) -> list[int]:
    """Mark dead the processes whose `live*` gauge files remain but who are gone.

    Returns:
        The process ids marked dead.
    """
    dead = sorted(pid for pid in _live_gauge_pids(folder) if not _running(pid))
    for pid in dead:
        mark_process_dead(pid, str(folder))
    return dead


def _live_gauge_pids(folder: Path) -> set[int]:
    """The processes with `live*` gauge files: the workers, unless marked dead."""
    pids = set()
    for path in folder.glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match:
            pids.add(int(match.group(1)))
    return pids


class WorkerProcesses(Collector):
    """prometheus-client's process metrics of every live worker, labelled with its `pid`.

    Read from `/proc` at each scrape, as prometheus-client's `ProcessCollector` reads its own
    process (Linux only; elsewhere there are none). A worker that exits between the listing and
    the reading is left out.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in sorted(_live_gauge_pids(self.folder)):
            process = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in process.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from families.values()


def mark_dead(folder: Path) -> None:
    """Drop this process's `live*` gauges (a worker that is stopping)."""
    mark_process_dead(os.getpid(), str(folder))


def render_all(folder: Path) -> bytes:
    """The text exposition of every worker's metrics, merged."""
    prune_dead_workers(folder)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    registry.register(WorkerProcesses(folder))
    PlatformCollector(registry=registry)
    return generate_latest(registry)


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited. A worker killed outright stays a zombie
    until uvicorn's supervisor reaps it, which a loaded machine can delay by many seconds; it
    answers signal 0 all the while, so its state is read too (Linux: `/proc`)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return not _exited(pid)


def _exited(pid: int) -> bool:
    """Whether `pid` has exited and waits to be reaped (a zombie); False where `/proc` does
    not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (command) state ...": the command may hold spaces and parentheses.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
