"""Prometheus metrics of the server (`GET /metrics`, `HEAD` too).

One process (the default, and every app a test creates): each app owns its registry, so many
apps can live in one process. Several worker processes (`mlfactory serve --workers N`): values
go to prometheus-client's multiprocess files and a scrape merges every worker's (see
`multiprocess_metrics`), so N requests show as N whichever worker answers the scrape.

Multiprocess mode has no `Info` and no `Gauge.set_function`: the served model is a gauge of
value 1 with labels, and the queue gauges are sampled (every `SAMPLE_INTERVAL_S`, and by the
worker answering a scrape); the decode gauges are set by the decode gate as requests pass it.
Each gauge's `multiprocess_mode` says how workers' values combine. Names follow Prometheus's
conventions: base units in the name (`_seconds`), `_total` on counters (prometheus-client adds
it), labels with few values (never a request id).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from mlfactory.bundle import BundleMeta
from mlfactory.serving.monitoring_metrics import MonitoringGauges, Report
from mlfactory.serving.multiprocess_metrics import mark_dead, multiprocess_dir, render_all

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST
SAMPLE_INTERVAL_S = 1.0
# What the connection guard (`connections.py`) does to a connection, as the `event` label.
GUARD_EVENTS = ("idle_closed", "refused", "head_timeout", "head_too_large")
# Why a background drift check failed, as the `reason` label.
CHECK_FAILURES = ("log", "error")

# Process-wide: the connection guard is part of uvicorn's protocol, one per process, not of an
# app. Each app's registry shows it; in multiprocess mode the files hold it like the rest.
connection_guard_events = Counter(
    "mlfactory_connection_guard_events",
    "Connections the connection guard acted on, by event: idle_closed (the longest-idle "
    "connection closed to make room), refused (503: every connection busy), head_timeout (408), "
    "head_too_large (431).",
    ["event"],
    registry=None,
)


class ServingMetrics:
    """The server's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.folder = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        if self.folder is None:
            _add_process_collectors(registry)
        self.requests, self.latency = _http_metrics(registry)
        self.batch_size, self.model_run, self.queue_depth = _batching_metrics(registry)
        self.decodes_in_progress, self.decodes_waiting = _decode_metrics(registry)
        self.log_pending, self.log_lag, self.log_write_errors, self.log_pruned = (
            _prediction_log_metrics(registry)
        )
        (
            self.predictions,
            self.ood_inputs,
            self.model_info,
            self.test_accuracy,
            self.reloads,
            self.monitoring_failures,
        ) = _model_metrics(registry)
        self.monitoring = MonitoringGauges(registry, initialise=self.folder is None)
        registry.register(connection_guard_events)
        self._start_series_at_zero()
        self._model: tuple[str, str, str] | None = None
        self._sources: tuple[Callable[[], int], Callable[[], int], Callable[[], float]] | None
        self._sources = None

    def _start_series_at_zero(self) -> None:
        """Create the labelled series whose labels are known now, each at 0."""
        # Series that exist from the start read 0, not "no data", in queries and alerts.
        for reason in CHECK_FAILURES:
            self.monitoring_failures.labels(reason=reason)
        for event in GUARD_EVENTS:
            connection_guard_events.labels(event)
        for result in ("ok", "failed"):
            self.reloads.labels(result)

    def watch_queues(
        self,
        batcher_depth: Callable[[], int],
        log_pending: Callable[[], int],
        log_lag_s: Callable[[], float],
    ) -> None:
        """Read the queue gauges from the batcher and the log at each `sample`."""
        self._sources = (batcher_depth, log_pending, log_lag_s)
        self.sample()

    def sample(self) -> None:
        """Set the queue gauges to the values now."""
        if self._sources is None:
            return
        depth, pending, lag_s = self._sources
        self.queue_depth.set(depth())
        self.log_pending.set(pending())
        self.log_lag.set(lag_s())

    async def sample_forever(self) -> None:
        """`sample` every `SAMPLE_INTERVAL_S` (a task of the app's lifespan)."""
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        """The app is stopping: its queues are empty and, with workers, its gauges go."""
        self._sources = None
        gauges = (self.queue_depth, self.log_pending, self.log_lag)
        for gauge in (*gauges, self.decodes_in_progress, self.decodes_waiting):
            gauge.set(0)
        if self.folder is not None:
            mark_dead(self.folder)

    def set_model(self, meta: BundleMeta) -> None:
        """Show `meta` as the served model, and count each of its labels from 0. On a reload
        (a model was shown before) the monitoring gauges read "not checked yet" until the
        first check with the model and profile loaded now.
        """
        served = (meta.name, meta.version, meta.modality)
        if self._model is not None:
            self.monitoring.reset()
        if self._model is not None and self._model != served:
            if self.folder is None:
                self.model_info.remove(*self._model)
            else:  # another worker's files may still hold it: it cannot be removed, only zeroed
                self.model_info.labels(*self._model).set(0)
        self.model_info.labels(*served).set(1)
        self._model = served
        self.test_accuracy.set(bundle_test_accuracy(meta))
        for label in meta.labels:
            self.predictions.labels(label)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one model call."""
        self.batch_size.observe(size)
        self.model_run.observe(seconds)

    def count_ood(self, inputs: int) -> None:
        """Count `inputs` predicted inputs found out of distribution."""
        self.ood_inputs.inc(inputs)

    def observe_report(self, report: Report) -> None:
        """Show a monitoring report (a `DriftReport`) as the monitoring gauges."""
        self.monitoring.observe(report)

    def render(self) -> bytes:
        """The text exposition of every metric (of every worker, in multiprocess mode)."""
        self.sample()
        if self.folder is not None:
            return render_all(self.folder)
        return generate_latest(self.registry)


def _add_process_collectors(registry: CollectorRegistry) -> None:
    """Show this process's own metrics in `registry` (one process only)."""
    # What prometheus-client's default registry shows: the process's CPU, memory and
    # file descriptors, Python's version and garbage collections. (With workers, a
    # scrape shows every worker's: `multiprocess_metrics.WorkerProcesses`.)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def _http_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The HTTP requests answered, and how long each took."""
    requests = Counter(
        "mlfactory_http_requests",
        "HTTP requests answered, by endpoint (route template), method and status code.",
        ["endpoint", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "mlfactory_http_request_duration_seconds",
        "Time from receiving a request to the end of its response, by endpoint and status class "
        "(2xx, 4xx, 5xx...: a 4xx such as 408 or 499 lasts as long as the client makes it).",
        ["endpoint", "status_class"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return requests, latency


def _batching_metrics(registry: CollectorRegistry) -> tuple[Histogram, Histogram, Gauge]:
    """The model calls (adaptive batching), and the inputs waiting for one."""
    batch_size = Histogram(
        "mlfactory_batch_size",
        "Inputs per model call (adaptive batching).",
        buckets=BATCH_BUCKETS,
        registry=registry,
    )
    model_run = Histogram(
        "mlfactory_model_run_seconds",
        "Duration of one model call (one batch).",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    queue_depth = Gauge(
        "mlfactory_queue_depth",
        "Inputs waiting for the model (all workers).",
        registry=registry,
        multiprocess_mode="livesum",
    )
    return batch_size, model_run, queue_depth


def _decode_metrics(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """The requests decoding their inputs, and those waiting for a decode slot (`DecodeGate`,
    MLFACTORY_MAX_CONCURRENT_DECODES per worker): set as they change, not sampled."""
    in_progress = Gauge(
        "mlfactory_decodes_in_progress",
        "Requests decoding and preprocessing their inputs now (all workers; at most "
        "MLFACTORY_MAX_CONCURRENT_DECODES per worker).",
        registry=registry,
        multiprocess_mode="livesum",
    )
    waiting = Gauge(
        "mlfactory_decodes_waiting",
        "Requests waiting for a decode slot, their bodies read (all workers).",
        registry=registry,
        multiprocess_mode="livesum",
    )
    return in_progress, waiting


def _prediction_log_metrics(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Counter, Counter]:
    """The prediction log's commits waiting, failed, and its rows pruned."""
    log_pending = Gauge(
        "mlfactory_prediction_log_pending",
        "Requests whose predictions wait to be committed to the prediction log (all workers).",
        registry=registry,
        multiprocess_mode="livesum",
    )
    log_lag = Gauge(
        "mlfactory_prediction_log_lag_seconds",
        "How long the oldest request still waiting for its prediction-log commit has waited "
        "(0 when none waits; the largest over workers).",
        registry=registry,
        multiprocess_mode="livemax",
    )
    log_write_errors = Counter(
        "mlfactory_prediction_log_write_errors",
        "Requests answered 503 because their predictions (or feedback labels) could not be "
        "committed to the prediction log.",
        registry=registry,
    )
    log_pruned = Counter(
        "mlfactory_prediction_log_pruned",
        "Predictions deleted from the prediction log for being older than MLFACTORY_LOG_RETENTION.",
        registry=registry,
    )
    return log_pending, log_lag, log_write_errors, log_pruned


def _model_metrics(
    registry: CollectorRegistry,
) -> tuple[Counter, Counter, Gauge, Gauge, Counter, Counter]:
    """The served model, its predictions, reloads and failed background drift checks."""
    predictions = Counter(
        "mlfactory_predictions",
        "Predictions answered, by predicted label.",
        ["label"],
        registry=registry,
    )
    ood_inputs = Counter(
        "mlfactory_ood_inputs",
        "Predicted inputs whose out-of-distribution score is over the bundle's threshold.",
        registry=registry,
    )
    model_info = Gauge(
        "mlfactory_model_info",
        "1 for the model being served (with several workers, one replaced by a reload is 0).",
        ["name", "version", "modality"],
        registry=registry,
        multiprocess_mode="livemax",
    )
    test_accuracy = Gauge(
        "mlfactory_model_test_accuracy",
        "Accuracy of the served model on its test split, from bundle.json (NaN if unknown).",
        registry=registry,
        multiprocess_mode="livemostrecent",
    )
    reloads = Counter(
        "mlfactory_model_reloads",
        "Hot reloads attempted, by result (ok or failed).",
        ["result"],
        registry=registry,
    )
    monitoring_failures = Counter(
        "mlfactory_monitoring_check_failures",
        "Background drift checks that failed, by reason: log (the prediction log could not "
        "be read) or error (anything else; the server's log has the traceback).",
        ["reason"],
        registry=registry,
    )
    return predictions, ood_inputs, model_info, test_accuracy, reloads, monitoring_failures


def bundle_test_accuracy(meta: BundleMeta) -> float:
    """The bundle's test accuracy (`metrics.test.accuracy` in bundle.json), NaN if absent."""
    test = meta.metrics.get("test")
    value = test.get("accuracy") if isinstance(test, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def prometheus_metrics(request: Request) -> Response:
    """Counters, histograms and gauges in the Prometheus text format."""
    metrics: ServingMetrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE)


router.add_api_route(
    "/metrics",
    prometheus_metrics,
    methods=["HEAD"],
    response_class=Response,
    include_in_schema=False,
)
