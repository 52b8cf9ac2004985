"""The latest monitoring report as Prometheus gauges.

The background drift check hands each report to `MonitoringGauges.observe`, which only renders
its JSON contract (`DriftReport.to_json()`): the overall verdict and the level it was decided
at, each check's verdict and corrected p-value, the window's out-of-distribution fraction, the
estimated accuracy with its interval, the mean confidence it is read beside (the window's and
the reference's), and the live accuracy over the labelled predictions.

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

        def gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(
                name, documentation, labels, registry=registry, multiprocess_mode="mostrecent"
            )

        self.drift = gauge(
            "mlfactory_drift_detected",
            "1 when the latest drift check found drift (p-values corrected together), else 0.",
        )
        self.level = gauge(
            "mlfactory_drift_level",
            "The level of the latest drift check's verdict (MLFACTORY_MONITOR_LEVEL): a check "
            "drifts when its corrected p-value is at most this.",
        )
        self.check_drift = gauge(
            "mlfactory_drift_check_detected",
            "1 when the check found drift in the latest drift check, else 0.",
            ("check", "kind"),
        )
        self.p_value = gauge(
            "mlfactory_drift_p_value",
            "The check's p-value, corrected for multiple testing (NaN: too little data).",
            ("check", "kind"),
        )
        self.ood_fraction = gauge(
            "mlfactory_ood_fraction",
            "Fraction of the checked window's inputs scored out of distribution.",
        )
        self.ood_expected = gauge(
            "mlfactory_ood_expected_fraction",
            "Fraction of in-distribution inputs the OOD threshold flags (its calibrated rate).",
        )
        self.estimated = gauge(
            "mlfactory_accuracy_estimated",
            "Accuracy estimated without labels from calibrated probabilities (checked window).",
        )
        self.estimated_lower = gauge(
            "mlfactory_accuracy_estimated_lower",
            "Lower end of the estimated accuracy's confidence interval.",
        )
        self.estimated_upper = gauge(
            "mlfactory_accuracy_estimated_upper",
            "Upper end of the estimated accuracy's confidence interval.",
        )
        self.confidence = gauge(
            "mlfactory_confidence_mean",
            "Mean raw top probability of the checked window's predictions.",
        )
        self.reference_confidence = gauge(
            "mlfactory_confidence_reference_mean",
            "Mean raw top probability on the reference data (NaN: the profile predates it).",
        )
        self.live = gauge(
            "mlfactory_accuracy_live",
            "Accuracy over the window's predictions that got a true label (NaN: none did).",
        )
        self.labelled = gauge(
            "mlfactory_feedback_labelled",
            "Predictions of the checked window that have a true label (POST /v1/feedback).",
        )
        self.window = gauge(
            "mlfactory_monitoring_window_predictions",
            "Predictions in the window of the latest drift check.",
        )
        self.last_check = gauge(
            "mlfactory_monitoring_last_check_timestamp_seconds",
            "Unix time of the latest drift check.",
        )
        if initialise:
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


def _number(value: Any) -> float:
    """A JSON number as a float; None (not measured) as NaN."""
    return math.nan if value is None else float(value)
