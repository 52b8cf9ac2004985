"""The background drift check: the monitoring gauges of `/metrics`, kept current off the
request path.

Every `MLFACTORY_MONITOR_EVERY` seconds (or predictions) of this worker in which it answered
any prediction or stored any feedback label, one task reads the served model's latest
`MLFACTORY_MONITOR_WINDOW` logged predictions, checks them against the bundle's profile in a
thread, and hands the report to `ServingMetrics.observe_report`.
A request only adds its count to a number and may set an event. Feedback labels count like
predictions: they change the window's live accuracy, and labels that come back while no
traffic does (a nightly batch of them) would otherwise never reach the gauges. Checks never
overlap. One that fails (the log cannot be read, or anything else goes wrong) is logged,
counted in `mlfactory_monitoring_check_failures_total` and retried at the next trigger: the
watch never stops for the rest of the worker's life.
With nothing new to check (no traffic), no check runs and the gauges keep the last verdict:
`mlfactory_monitoring_last_check_timestamp_seconds` says how old it is, and the drift and
accuracy alerts resolve once it is 30 minutes old (deploy/prometheus/mlfactory-rules.yml).
With several workers each checks the shared log on its own count; the latest report wins in
the gauges. A reload resets the gauges and checks the new model's window at once; a check that
was under way for the previous model is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import anyio

from mlfactory.errors import LogDatabaseError
from mlfactory.monitoring.report import DriftReport, MonitorSettings, check_window
from mlfactory.predictor import Predictor
from mlfactory.serving.metrics import ServingMetrics
from mlfactory.serving.monitoring import read_served_window, run_check
from mlfactory.serving.prediction_log import PredictionLog
from mlfactory.serving.settings import ServingSettings, monitor_schedule

log = logging.getLogger(__name__)


class DriftWatch:
    """Triggers and runs the background drift check of one worker."""

    def __init__(
        self,
        settings: ServingSettings,
        prediction_log: PredictionLog,
        metrics: ServingMetrics,
        served: Callable[[], Predictor | None],
        limiter: anyio.CapacityLimiter,
    ) -> None:
        """Set up an idle watch; `start` it on the event loop.

        Args:
            settings: `monitor_every`, `monitor_window` and `monitor_level`.
            prediction_log: the log to read.
            metrics: whose gauges show each report.
            served: the predictor serving now (None while none is loaded).
            limiter: the worker's slots for checks of the log, shared with the endpoints.
        """
        self.every_predictions, self.every_seconds = monitor_schedule(settings.monitor_every)
        self.window = settings.monitor_window
        self.check_settings = MonitorSettings(level=settings.monitor_level)
        self.prediction_log, self.metrics, self.served = prediction_log, metrics, served
        self.limiter = limiter
        self.checks = 0
        self._since_check = 0
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """False when `monitor_every` is 0."""
        return bool(self.every_predictions or self.every_seconds)

    def start(self) -> None:
        """Start the checking task on the running loop (nothing when disabled)."""
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="drift-watch")

    async def stop(self) -> None:
        """Cancel the task (a check in its thread finishes on its own)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def count(self, changes: int) -> None:
        """Count answered predictions or stored feedback labels; the check is due once there are
        enough."""
        self._since_check += changes
        if self.every_predictions and self._since_check >= self.every_predictions:
            self._due.set()

    def recheck(self) -> None:
        """Check at once (another model or profile is served: the gauges were reset)."""
        self._since_check = max(self._since_check, 1)
        self._due.set()

    async def _run(self) -> None:
        while True:
            timeout = self.every_seconds or None
            with contextlib.suppress(TimeoutError):  # the time trigger
                await asyncio.wait_for(self._due.wait(), timeout)
            self._due.clear()
            if not self._since_check:  # nothing new to check since the last one
                continue
            self._since_check = 0
            try:
                await self.check_now()
            except Exception:  # a bug in one check must not end the checks of this worker
                log.exception("background drift check failed")
                self.metrics.monitoring_failures.labels(reason="error").inc()

    async def check_now(self) -> bool:
        """Run one check and show it in the gauges; False when nothing could be checked."""
        predictor = self.served()
        profile = predictor.profile if predictor is not None else None
        if predictor is None or profile is None:
            return False
        meta = predictor.bundle.meta
        model = {"name": meta.name, "version": meta.version}

        def check() -> DriftReport | None:
            window = read_served_window(self.prediction_log, predictor, profile, self.window)
            return (
                check_window(profile, window, model, self.check_settings) if len(window) else None
            )

        try:
            report = await run_check(self.limiter, check)
        except LogDatabaseError as exc:
            log.warning("background drift check skipped: %s", exc)
            self.metrics.monitoring_failures.labels(reason="log").inc()
            return False
        if report is None or self.served() is not predictor:  # reloaded while it checked
            return False
        self.metrics.observe_report(report)
        self.checks += 1
        return True
