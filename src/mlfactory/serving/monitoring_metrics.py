"""The latest monitoring report as Prometheus gauges.

The background drift check hands each report to `MonitoringGauges.observe`, which only renders
its JSON contract (`DriftReport.to_json()`): the overall verdict and the level it was decided
at, each check's verdict and corrected p-value, the window's out-of-distribution fraction, the
estimated accuracy with its interval, the mean confidence it is read beside (the window's and
the reference's), and the live accuracy over the labelled predictions. A reload to another
model (`reset`) sets them back to "not checked yet" until its first check.

With several workers the latest report wins, whichever worker checked (`mostrecent`): a report
stays shown after its worker stops, and `mlfactory_monitoring_last_check_timestamp_seconds`
says how old it is. Before the first check the gauges read NaN (one process) or are absent
(several workers): "not checked yet" is never a 0 that an alert would compare with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge


class Report(Protocol):
    """What the gauges read from a monitoring report: its JSON contract."""

    def to_json(self) -> dict[str, Any]:
        """`{"drift", "level", "checks": [...], "ood": {...}, "accuracy": {...}, "window": ...}`."""
        ...


class MonitoringGauges:
    """Gauges of the latest drift check of the served model's logged predictions."""

    def __init__(self, registry: CollectorRegistry, initialise: bool) -> None:
        """Create the gauges in `registry`.

        Args:
            registry: the app's registry.
            initialise: set the label-free gauges to NaN now (one process only: with several
                workers a newly started worker must not hide a report another one made).
        """
        self.drift, self.level, self.check_drift, self.p_value = _drift_gauges(registry)
        self.ood_fraction, self.ood_expected = _ood_gauges(registry)
        (
            self.estimated,
            self.estimated_lower,
            self.estimated_upper,
            self.confidence,
            self.reference_confidence,
        ) = _estimated_accuracy_gauges(registry)
        self.live, self.labelled = _live_accuracy_gauges(registry)
        self.window, self.last_check = _window_gauges(registry)
        self._one_process = initialise
        self._checks: set[tuple[str, str]] = set()  # the per-check gauges' labels shown
        if initialise:
            self._set_unchecked()

    def reset(self) -> None:
        """Another model is served: nothing of it has been checked yet, so every gauge reads
        NaN (with several workers, NaN set now is the most recent value) and the checks of
        the previous model go (one process) or read NaN (several)."""
        self._set_unchecked()
        for gauge in (self.check_drift, self.p_value):
            if self._one_process:
                gauge.clear()
            else:
                for labels in self._checks:
                    gauge.labels(*labels).set(math.nan)
        if self._one_process:
            self._checks.clear()

    def _set_unchecked(self) -> None:
        """Set the label-free gauges to NaN: not checked yet."""
        for unset in (
            self.drift,
            self.level,
            self.ood_fraction,
            self.ood_expected,
            self.estimated,
            self.estimated_lower,
            self.estimated_upper,
            self.confidence,
            self.reference_confidence,
            self.live,
            self.labelled,
            self.window,
            self.last_check,
        ):
            unset.set(math.nan)

    def observe(self, report: Report) -> None:
        """Set every gauge from one report."""
        data = report.to_json()
        self.drift.set(1.0 if data["drift"] else 0.0)
        self.level.set(_number(data.get("level")))
        for check in data["checks"]:
            labels = (str(check["name"]), str(check["kind"]))
            self._checks.add(labels)
            self.check_drift.labels(*labels).set(1.0 if check["drift"] else 0.0)
            self.p_value.labels(*labels).set(_number(check["p_value"]))
        self.ood_fraction.set(_number(data["ood"]["fraction"]))
        self.ood_expected.set(_number(data["ood"].get("expected")))
        accuracy: Mapping[str, Any] = data["accuracy"]
        low, high = accuracy.get("estimated_ci") or (None, None)
        self.estimated.set(_number(accuracy["estimated"]))
        self.estimated_lower.set(_number(low))
        self.estimated_upper.set(_number(high))
        self.confidence.set(_number(accuracy.get("mean_confidence")))
        self.reference_confidence.set(_number(accuracy.get("reference_confidence")))
        self.live.set(_number(accuracy["live"]))
        self.labelled.set(_number(accuracy["labelled"]))
        self.window.set(_number(data["window"]["n"]))
        self.last_check.set(time.time())


def _latest_gauge(
    registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()
) -> Gauge:
    """A gauge of the latest report: with several workers, the most recently set value wins."""
    return Gauge(name, documentation, labels, registry=registry, multiprocess_mode="mostrecent")


def _drift_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Gauge, Gauge]:
    """The drift verdict, its level, and each check's verdict and p-value."""
    drift = _latest_gauge(
        registry,
        "mlfactory_drift_detected",
        "1 when the latest drift check found drift (p-values corrected together), else 0.",
    )
    level = _latest_gauge(
        registry,
        "mlfactory_drift_level",
        "The level of the latest drift check's verdict (MLFACTORY_MONITOR_LEVEL): a check "
        "drifts when its corrected p-value is at most this.",
    )
    check_drift = _latest_gauge(
        registry,
        "mlfactory_drift_check_detected",
        "1 when the check found drift in the latest drift check, else 0.",
        ("check", "kind"),
    )
    p_value = _latest_gauge(
        registry,
        "mlfactory_drift_p_value",
        "The check's p-value, corrected for multiple testing (NaN: too little data).",
        ("check", "kind"),
    )
    return drift, level, check_drift, p_value


def _ood_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """The window's out-of-distribution fraction, and the one the threshold expects."""
    ood_fraction = _latest_gauge(
        registry,
        "mlfactory_ood_fraction",
        "Fraction of the checked window's inputs scored out of distribution.",
    )
    ood_expected = _latest_gauge(
        registry,
        "mlfactory_ood_expected_fraction",
        "Fraction of in-distribution inputs the OOD threshold is expected to flag.",
    )
    return ood_fraction, ood_expected


def _estimated_accuracy_gauges(
    registry: CollectorRegistry,
) -> tuple[Gauge, Gauge, Gauge, Gauge, Gauge]:
    """The accuracy estimated without labels, its interval, and the mean confidences."""
    estimated = _latest_gauge(
        registry,
        "mlfactory_accuracy_estimated",
        "Accuracy estimated without labels from calibrated probabilities (checked window).",
    )
    estimated_lower = _latest_gauge(
        registry,
        "mlfactory_accuracy_estimated_lower",
        "Lower end of the estimated accuracy's confidence interval.",
    )
    estimated_upper = _latest_gauge(
        registry,
        "mlfactory_accuracy_estimated_upper",
        "Upper end of the estimated accuracy's confidence interval.",
    )
    confidence = _latest_gauge(
        registry,
        "mlfactory_confidence_mean",
        "Mean raw top probability of the checked window's predictions.",
    )
    reference_confidence = _latest_gauge(
        registry,
        "mlfactory_confidence_reference_mean",
        "Mean raw top probability on the reference data (NaN: the profile predates it).",
    )
    return estimated, estimated_lower, estimated_upper, confidence, reference_confidence


def _live_accuracy_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """The accuracy over the window's labelled predictions, and how many there are."""
    live = _latest_gauge(
        registry,
        "mlfactory_accuracy_live",
        "Accuracy over the window's predictions that got a true label (NaN: none did).",
    )
    labelled = _latest_gauge(
        registry,
        "mlfactory_feedback_labelled",
        "Predictions of the checked window that have a true label (POST /v1/feedback).",
    )
    return live, labelled


def _window_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """The size of the checked window, and when the check ran."""
    window = _latest_gauge(
        registry,
        "mlfactory_monitoring_window_predictions",
        "Predictions in the window of the latest drift check.",
    )
    last_check = _latest_gauge(
        registry,
        "mlfactory_monitoring_last_check_timestamp_seconds",
        "Unix time of the latest drift check.",
    )
    return window, last_check


def _number(value: Any) -> float:
    """A JSON number as a float; None (not measured) as NaN."""
    return math.nan if value is None else float(value)
