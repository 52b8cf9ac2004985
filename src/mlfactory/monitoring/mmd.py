"""Maximum mean discrepancy (MMD) two-sample test with a permutation null.

MMD (Gretton et al., 2012) with a Gaussian kernel compares two samples of vectors through every
pairwise similarity, so it sees a change of any kind (location, spread, a new cluster), not only
of the mean. The kernel width is the median pairwise distance of the pooled sample. The p-value
comes from permuting which rows are "reference" and which are "window": exact in level for any
sample size, with no distributional assumption. All permutations are scored at once as one
matrix product, K @ W, where each column of W holds the +1/m, -1/n weights of one permutation
(in blocks of `BLOCK` permutations, so that a strict level's thousands stay small in memory).
"""

from __future__ import annotations

import numpy as np

DEFAULT_PERMUTATIONS = 500
# Permutations scored per matrix product: bounds the memory of K @ W at (m + n) x BLOCK.
BLOCK = 1000


def mmd_test(
    reference: np.ndarray,
    window: np.ndarray,
    rng: np.random.Generator,
    permutations: int = DEFAULT_PERMUTATIONS,
) -> tuple[float, float]:
    """MMD^2 between two samples and its permutation p-value.

    Args:
        reference: (m, k) vectors.
        window: (n, k) vectors.
        rng: draws the permutations.
        permutations: permutations of the null distribution; the smallest p-value possible is
            1 / (permutations + 1).

    Returns:
        (the biased MMD^2 estimate, the p-value).
    """
    pooled = np.concatenate([reference, window]).astype(np.float32)
    m, n = len(reference), len(window)
    norms = np.sum(pooled**2, axis=1)
    distance2 = np.maximum(norms[:, None] + norms[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    upper = distance2[np.triu_indices(m + n, k=1)]
    width2 = float(np.median(upper)) or float(upper.mean()) or 1.0
    kernel = np.exp(-distance2 / width2)
    weights = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)]).astype(np.float32)
    observed = float(weights @ kernel @ weights)
    exceed = 0
    for start in range(0, permutations, BLOCK):
        # One column per permutation: the same weights, shuffled over the pooled rows.
        order = np.argsort(rng.random((min(BLOCK, permutations - start), m + n)), axis=1)
        shuffled = weights[order].T
        null = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)
        # Ties count against drift: float noise must not make identical statistics "larger".
        exceed += int(np.sum(null >= observed - 1e-7 * abs(observed)))
    return observed, (exceed + 1) / (permutations + 1)
