"""Out-of-distribution score: how far an embedding lies from every class the model knows.

The score is the class-conditional Mahalanobis distance (Lee et al., 2018) with one covariance
shared by all classes, taken to the nearest class mean. The covariance is D x D and is estimated
from a few hundred vectors, so it is regularised as in probabilistic PCA: its `dims` leading
within-class directions keep their own variance, and every other direction shares the mean
variance of the rest. The profile then stores a D x dims basis instead of a D x D matrix, and
scoring a batch is one float32 product with a precomputed D x (dims + classes) matrix and a
few operations on the small result (no loop, no torch). Export appends the same arithmetic to
the bundle's ONNX graph (`mlfactory.training.ood_graph`), so that the server gets the score from
the model call itself.

The distance is divided by D, so in-distribution inputs score about 1. The threshold is the
(1 - fpr) quantile of scores of in-distribution inputs that the scorer was not fitted on (split
conformal calibration, see `OodScorer.fit`).

A convolutional backbone also outputs `early_features`, the channel statistics of an early
stage (`mlfactory.training.network`). Its bundles score both, as Lee et al. (2018) do with
several layers: a second scorer of the same kind on the early features, and the score is the
sum of the two distances, each standardised by the mean and spread of its held-out
calibration scores (so in-distribution inputs score about 0 there). The early stage sees
noise, blur and texture that the pooled embedding has learnt to ignore; measured on real
corruptions in docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
from scipy import stats

from mlfactory.monitoring.blas import one_thread
from mlfactory.monitoring.projection import Projection

DEFAULT_FPR = 0.01
DEFAULT_DIMS = 64
# Share of the reference rows held out to calibrate the threshold (never fitted on).
CALIBRATION_FRACTION = 0.3
# Floor for variances, relative to the largest: keeps a direction the data never moved along
# from dividing by ~0.
VARIANCE_FLOOR = 1e-6
# A scorer scores in float64 when its inverse residual variance exceeds this many times the
# width. The expanded distance (`DistanceTerms`) then sums terms that much larger than an
# in-distribution distance (about the width), and float32 cancels them into an error that grows
# with the ratio: against float64 on the benchmark's unseen inputs, 3e-6 at a ratio of 11 and
# 6e-6 at 22 (its image and audio embeddings), 1.2e-4 at 81 to 99 (its text embedding), 5e-4
# to 1.8e-3 at 2e3 to 4e3 (its early features); a 64-wide embedding fitted on a few dozen
# clips reached 1.6e4, and the float32 scores of numpy and ONNX Runtime were 4.5e-3 apart
# (benchmarks/monitoring/score_precision.py, docs/benchmarks.md).
FLOAT64_ABOVE = 300.0
# The smallest spread, relative to |mean| + 1, that standardises a part of the score (`_spread`).
# Trained models' held-out scores spread 0.08 to 0.59 of that (embeddings and early features of
# the suite's digits, speech and compiled, pruned and DDP runs).
SPREAD_FLOOR = 1e-2


class DistanceTerms(NamedTuple):
    """The squared distance of x from class mean m_c, expanded into terms computed once.

    With B the basis, w the inverse variances along it less r, r the inverse residual variance:
      sum_k w_k (B^T x - B^T m_c)_k^2 + r |x - m_c|^2
      = [sum_k w_k (B^T x)_k^2 + r |x|^2] - 2 x . l_c + const_c,
    with l_c = B (w * B^T m_c) + r m_c. One product of a batch with [B | L] then gives every
    term, and what is left works on arrays of a few columns.
    """

    basis: np.ndarray  # (D, k) B
    weights: np.ndarray  # (k,) w
    residual: float  # r
    linear: np.ndarray  # (D, C) L: l_c in column c
    constants: np.ndarray  # (C,) const_c


@dataclass
class OodScorer:
    """Mahalanobis distance to the nearest class mean under a shared, PPCA-regularised covariance.

    Attributes:
        class_means: (C, D) mean embedding of each class seen in the reference data.
        projection: leading within-class directions (its `mean` is zero) and their variances.
        threshold: scores above it are out of distribution.
        fpr: the false-positive rate the threshold was calibrated to.
        normalize: embeddings are scaled to unit length before anything else.
        calibration_scores: the scores of the held-out calibration rows (the threshold is
            their quantile); the drift check of the score compares a window with them.
        early: the scorer of the early features, when the score reads them too.
        float64: score in float64 (the early features' scorer: see `OodScorer.fit`).
        standardization: with `early`, the mean and standard deviation of the held-out scores
            of the embedding's scorer, then of the early features' scorer.
    """

    class_means: np.ndarray
    projection: Projection
    threshold: float = float("inf")
    fpr: float = DEFAULT_FPR
    normalize: bool = False
    calibration_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    early: OodScorer | None = None
    float64: bool = False
    standardization: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    _dims: int = field(init=False, repr=False, compare=False)
    _fused: np.ndarray = field(init=False, repr=False, compare=False)
    _weights: np.ndarray = field(init=False, repr=False, compare=False)
    _residual: np.floating = field(init=False, repr=False, compare=False)
    _constants: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Everything per class that a batch reuses, computed once (float64), kept in float32
        # (float64 for a `float64` scorer): see `DistanceTerms`.
        terms = self.distance_terms()
        self._dims = terms.basis.shape[1]
        dtype = np.float64 if self.float64 else np.float32
        fused = np.concatenate([terms.basis, terms.linear], axis=1)
        self._fused = np.ascontiguousarray(fused, dtype)
        self._weights = terms.weights.astype(dtype)
        self._residual = dtype(terms.residual)
        self._constants = terms.constants.astype(dtype)

    def distance_terms(self) -> DistanceTerms:
        """The expanded squared distance's precomputed terms, in float64."""
        means = np.asarray(self.class_means, dtype=np.float64)
        basis = np.asarray(self.projection.basis, dtype=np.float64)
        variances = np.asarray(self.projection.variances, dtype=np.float64)
        floor = VARIANCE_FLOOR * float(variances.max(initial=1.0))
        inverse = 1.0 / np.maximum(variances, floor)
        residual = 1.0 / max(self.projection.residual_variance, floor)
        in_basis = means @ basis  # (C, k)
        weights = inverse - residual
        return DistanceTerms(
            basis=basis,
            weights=weights,
            residual=residual,
            linear=basis @ (weights[:, None] * in_basis.T) + residual * means.T,  # (D, C)
            constants=(in_basis**2) @ weights + residual * np.sum(means**2, axis=1),
        )

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray,
        labels: np.ndarray,
        fpr: float = DEFAULT_FPR,
        dims: int = DEFAULT_DIMS,
        normalize: bool = True,
        seed: int = 0,
        early_features: np.ndarray | None = None,
        calibration_fraction: float = CALIBRATION_FRACTION,
    ) -> OodScorer:
        """Fit on in-distribution embeddings and calibrate the threshold to `fpr`.

        Split conformal calibration: a stratified `CALIBRATION_FRACTION` of the rows is held
        out, the scorer is fitted on the rest, and the threshold is the (1 - fpr) quantile of
        the held-out scores at rank (n + 1)(1 - fpr), interpolated between neighbours. A new
        in-distribution input then scores above it with probability fpr on average, whatever
        the embedding's distribution (exactly so when (n + 1)(1 - fpr) is a whole number; with
        fewer than 1 / fpr held-out rows the threshold is their largest score, and the rate is
        about 1 / (n + 1)). Fitting on all rows and calibrating on out-of-fold scores would not
        be exact: the variances of a fit on fewer rows are smaller, so out-of-fold scores run
        high and the threshold with them (measured: half the nominal rate).

        With `early_features`, a second scorer is fitted on them (same rows, same options), and
        the score is the sum of both standardised scores (the module docstring). The means and
        spreads that standardise come from the same held-out rows as the threshold, so the
        threshold's rate is not exact there but close (measured in tests/monitoring).

        Args:
            embeddings: (N, D) embeddings of data the model did not train on.
            labels: (N,) their true class indices.
            fpr: the target false-positive rate on in-distribution inputs.
            dims: within-class directions that keep their own variance.
            normalize: scale embeddings to unit length first (measured: it separates foreign
                inputs much better, see docs/benchmarks.md).
            seed: seeds the calibration split.
            early_features: (N, E) the same inputs' early features, when the model has them.
            calibration_fraction: share of each class's rows held out to calibrate.
        """
        y = np.asarray(labels, dtype=np.int64)
        held_out = _calibration_rows(y, calibration_fraction, seed)
        x = _prepare(embeddings, normalize)
        scorer = cls._fit_only(x[~held_out], y[~held_out], dims, normalize)
        scores = scorer.score(x[held_out])  # unit length already: normalising again is a no-op
        if early_features is not None:
            e = _prepare(early_features, normalize)
            # At most half the early features' directions keep their own variance, so that the
            # rest share a residual one (the AUROCs of docs/benchmarks.md barely move between 8
            # and 47 of 48 directions). Their residual variance is small, and the expanded
            # distance then cancels large terms: float32 scores of one input differed by 6e-3
            # between numpy and ONNX Runtime (the order of summation). A few dozen features
            # cost nothing in float64 here; the model's graph expands the distance around the
            # class means' centre instead, in float32 (`mlfactory.training.ood_graph`).
            early_dims = min(dims, max(1, e.shape[1] // 2))
            early = cls._fit_only(e[~held_out], y[~held_out], early_dims, normalize, True)
            early_scores = early.score(e[held_out])
            scorer.early = early
            scorer.standardization = np.array(
                [scores.mean(), _spread(scores), early_scores.mean(), _spread(early_scores)]
            )
            scores = scorer._combine(scores, early_scores)
        scorer.fpr = fpr
        # "weibull": the k-th smallest of n scores sits at quantile k / (n + 1).
        scorer.threshold = float(np.quantile(scores, 1.0 - fpr, method="weibull"))
        scorer.calibration_scores = scores.astype(np.float32)
        return scorer

    @classmethod
    def _fit_only(
        cls, x: np.ndarray, y: np.ndarray, dims: int, normalize: bool, float64: bool = False
    ) -> OodScorer:
        classes = np.unique(y)
        means = np.stack([x[y == c].mean(axis=0) for c in classes])
        within = x - means[np.searchsorted(classes, y)]
        dof = max(len(x) - len(classes), 1)
        # Rescaled so that the fitted variances divide by N - C (the classes' means were fitted).
        scaled = within * np.sqrt((len(x) - 1) / dof)
        # The rows span at most N - C directions. Keeping all of them left no variance for the
        # residual ones (~1e-20, floored at VARIANCE_FLOOR): the score was then dominated by
        # them, and the float32 sums cancelled terms of ~1e8 (the graph's and numpy's scores
        # of a 64-wide embedding fitted on 35 rows differed by 4.5e-3). At most half of the
        # spanned directions keep their own variance, so that the rest give the residual one.
        dims = min(dims, max(1, min(dof, x.shape[1]) // 2))
        projection = Projection.fit(scaled, dims, np.zeros(x.shape[1]))
        scorer = cls(
            class_means=means.astype(np.float32),
            projection=projection,
            normalize=normalize,
            float64=float64,
        )
        if not float64 and scorer.distance_terms().residual > FLOAT64_ABOVE * x.shape[1]:
            scorer = replace(scorer, float64=True)
        return scorer

    def score(self, embeddings: np.ndarray, early_features: np.ndarray | None = None) -> np.ndarray:
        """(N, D) embeddings (and (N, E) early features, when the scorer reads them) -> (N,)
        scores: about 1 in distribution (about 0 with early features), larger further out.

        Raises:
            ValueError: an array is not 2-D, or the early features the scorer needs are missing.
        """
        with one_thread():
            scores = self._score(embeddings)
            if self.early is None:
                return scores
            if early_features is None:
                raise ValueError(
                    "this OOD score also reads the model's early_features output, and none "
                    "were given"
                )
            return self._combine(scores, self.early._score(early_features))

    @property
    def expected_rate(self) -> float:
        """The share of in-distribution inputs expected above the threshold: `fpr`, or 1 / (n + 1)
        when the n calibration scores were too few to reach it (the threshold is then their
        largest, which a new input exceeds with that probability)."""
        n = len(self.calibration_scores)
        return max(self.fpr, 1.0 / (n + 1)) if n else self.fpr

    def rate_range(self, coverage: float = 0.9) -> tuple[float, float]:
        """Where the rate at which this threshold flags in-distribution inputs lies, with
        probability `coverage`, over the draws of the n calibration scores it came from.

        Split conformal calibration holds the rate to `expected_rate` on average over those
        draws; one profile's rate is 1 - F(threshold) for the scores' distribution F. For the
        k-th smallest of n scores that is Beta(n + 1 - k, k), whatever F is. The threshold sits
        at rank h = (n + 1)(1 - fpr), between two scores, and the law is taken at h (exact
        when h is whole; its mean is then fpr); with h above n, at the largest score:
        Beta(1, n). The spread is what a larger validation split narrows (measured against
        unseen inputs: benchmarks/monitoring/ood_calibration.py). Without calibration scores
        nothing is known of it: (0, 1).
        """
        n = len(self.calibration_scores)
        if n == 0:
            return 0.0, 1.0
        rank = min((n + 1) * (1.0 - self.fpr), float(n))
        law = stats.beta(n + 1 - rank, rank)
        tail = (1.0 - coverage) / 2.0
        return float(law.ppf(tail)), float(law.ppf(1.0 - tail))

    @property
    def reads_early_features(self) -> bool:
        """True when the score needs the model's `early_features` output too."""
        return self.early is not None

    def _combine(self, scores: np.ndarray, early_scores: np.ndarray) -> np.ndarray:
        mean, spread, early_mean, early_spread = self.standardization
        return np.asarray((scores - mean) / spread + (early_scores - early_mean) / early_spread)

    def _score(self, embeddings: np.ndarray) -> np.ndarray:
        # Few numpy calls on small arrays: right after a model call the caches are cold, and
        # each call then costs several microseconds whatever its size.
        x = np.asarray(embeddings, dtype=self._fused.dtype)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (N, D), got shape {x.shape}")
        squared_norms = np.einsum("nd,nd->n", x, x)
        products = x @ self._fused
        if self.normalize:  # (x / |x|) @ F = (x @ F) / |x|, and |x / |x||^2 = 1
            products /= np.sqrt(np.maximum(squared_norms, 1e-24))[:, None]
            squared_norms = np.ones_like(squared_norms)
        along = products[:, : self._dims]
        rows = (along * along) @ self._weights + self._residual * squared_norms
        distances = (rows[:, None] + self._constants) - 2.0 * products[:, self._dims :]
        return distances.min(axis=1).astype(np.float64) / x.shape[1]

    def fingerprint(self) -> str:
        """sha256 of what the score depends on (as saved in the profile; not the threshold).

        A bundle whose model computes this score in its own graph records it there
        (`mlfactory.training.ood_graph`); the server uses that output only while the profile it
        loads gives the same fingerprint.
        """
        digest = hashlib.sha256()
        for array in (self.class_means, self.projection.basis, self.projection.variances):
            contiguous = np.ascontiguousarray(array)
            digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
            digest.update(contiguous.tobytes())
        settings = (float(self.projection.residual_variance), self.normalize)
        digest.update(repr(settings + ((True,) if self.float64 else ())).encode())
        if self.early is not None:
            digest.update(self.early.fingerprint().encode())
            digest.update(np.asarray(self.standardization, np.float64).tobytes())
        return digest.hexdigest()

    def is_ood(
        self, embeddings: np.ndarray, early_features: np.ndarray | None = None
    ) -> np.ndarray:
        """(N,) True where the score is above the calibrated threshold."""
        return np.asarray(self.score(embeddings, early_features) > self.threshold)


def _prepare(embeddings: np.ndarray, normalize: bool) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (N, D), got shape {x.shape}")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def _spread(scores: np.ndarray) -> float:
    """The standard deviation of held-out scores, at least `SPREAD_FLOOR` of their scale.

    A collapsed model (one embedding direction per class, or none) gives held-out scores with
    no spread: what differs between them is float rounding, and dividing by it made the
    rounding the score (the graph's and numpy's standardised scores were 0.3 apart).
    """
    return max(float(np.std(scores)), SPREAD_FLOOR * (abs(float(np.mean(scores))) + 1.0))


def _calibration_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A mask of about `fraction` of each class's rows (seeded); every class keeps one to fit."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        take = min(round(len(rows) * fraction), len(rows) - 1)
        mask[rows[:take]] = True
    return mask
