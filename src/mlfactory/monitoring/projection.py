"""Principal directions of an embedding: the small basis the profile stores instead of raw vectors.

A bundle's embedding is hundreds of floats wide (1,280 for efficientnet_lite0, 384 for MiniLM).
Both the out-of-distribution score and the embedding drift test work on its projection onto a
few leading principal directions, fitted on the reference data; the basis travels in the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg


@dataclass
class Projection:
    """Centre, then project onto `dims` orthonormal directions.

    Attributes:
        mean: (D,) the centre subtracted first.
        basis: (D, k) orthonormal columns, the leading principal directions.
        variances: (k,) the variance of the fitted data along each direction.
        residual_variance: the mean variance per direction left out (0 when none is left).
    """

    mean: np.ndarray
    basis: np.ndarray
    variances: np.ndarray
    residual_variance: float

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(cls, data: np.ndarray, dims: int, center: np.ndarray | None = None) -> Projection:
        """The principal directions of `data` (rows are samples).

        Args:
            data: (N, D) the vectors to fit on, already centred if `center` is given as zeros.
            dims: directions to keep (at most min(N, D)).
            center: the centre to subtract (default: the mean of `data`).
        """
        x = np.asarray(data, dtype=np.float64)
        mean = x.mean(axis=0) if center is None else np.asarray(center, dtype=np.float64)
        centred = x - mean
        scale = 1.0 / max(len(x) - 1, 1)
        keep = max(1, min(dims, *centred.shape))
        eigen, basis = _leading_directions(centred, keep)
        total = float(np.sum(centred**2)) * scale
        left = x.shape[1] - keep
        residual = max(total - float(eigen.sum()) * scale, 0.0) / left if left > 0 else 0.0
        return cls(
            mean=mean.astype(np.float32),
            basis=basis.astype(np.float32),
            variances=(eigen * scale).astype(np.float32),
            residual_variance=residual,
        )

    def transform(self, data: np.ndarray, whiten: bool = False) -> np.ndarray:
        """(N, D) -> (N, k) coordinates along the basis.

        Args:
            data: the vectors.
            whiten: divide each coordinate by its standard deviation in the fitted data, so that
                every direction counts the same.
        """
        projected = (np.asarray(data, dtype=np.float32) - self.mean) @ self.basis
        if whiten:
            projected /= np.sqrt(np.maximum(self.variances, 1e-12))
        return projected


def _leading_directions(centred: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """The `keep` largest eigenvalues of centred^T centred and their (D, keep) eigenvectors.

    Uses the smaller of the N x N and D x D Gram matrices (a few hundred reference rows against
    a 1,280-wide embedding: the N x N one) and asks LAPACK for the leading eigenpairs only.
    """
    rows, width = centred.shape
    gram = centred @ centred.T if rows < width else centred.T @ centred
    size = len(gram)
    values, vectors = linalg.eigh(gram, subset_by_index=[size - keep, size - 1], driver="evx")
    values, vectors = np.maximum(values[::-1], 0.0), vectors[:, ::-1]
    if rows < width:  # eigenvectors of the N x N Gram matrix -> directions in embedding space
        vectors = centred.T @ vectors / np.sqrt(np.maximum(values, 1e-300))
    return values, vectors
