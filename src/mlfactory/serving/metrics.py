"""Prometheus metrics of one app (`GET /metrics`, `HEAD` too), in a registry of its own.

Each app owns its registry, so tests and embedders can create many apps in one process. With
several uvicorn workers each worker counts its own requests; a scrape sees the worker it hit.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from mlfactory.bundle import BundleMeta

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    """The server's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "mlfactory_http_requests",
            "HTTP requests answered, by endpoint (route template), method and status code.",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "mlfactory_http_request_duration_seconds",
            "Time from receiving a request to the end of its response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "mlfactory_batch_size",
            "Inputs per model call (adaptive batching).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.model_run = Histogram(
            "mlfactory_model_run_seconds",
            "Duration of one model call (one batch).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "mlfactory_queue_depth", "Inputs waiting for the model.", registry=registry
        )
        self.log_pending = Gauge(
            "mlfactory_prediction_log_pending",
            "Requests whose predictions wait to be committed to the prediction log.",
            registry=registry,
        )
        self.predictions = Counter(
            "mlfactory_predictions",
            "Predictions answered, by predicted label.",
            ["label"],
            registry=registry,
        )
        self.model = Info(
            "mlfactory_model", "The model being served (changes on reload).", registry=registry
        )
        self.reloads = Counter(
            "mlfactory_model_reloads",
            "Hot reloads attempted, by result (ok or failed).",
            ["result"],
            registry=registry,
        )

    def watch_queues(
        self, batcher_depth: Callable[[], int], log_pending: Callable[[], int]
    ) -> None:
        """Read the two queue gauges from the batcher and the log at each scrape."""
        self.queue_depth.set_function(batcher_depth)
        self.log_pending.set_function(log_pending)

    def set_model(self, meta: BundleMeta) -> None:
        """Show `meta` as the served model."""
        self.model.info({"name": meta.name, "version": meta.version, "modality": meta.modality})

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one model call."""
        self.batch_size.observe(size)
        self.model_run.observe(seconds)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)


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
