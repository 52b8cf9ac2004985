"""Principal directions of real digit images match numpy's SVD."""

from __future__ import annotations

import numpy as np

from mlfactory.monitoring.projection import Projection


def test_basis_and_variances_match_the_svd(mnist_pixels: tuple[np.ndarray, np.ndarray]) -> None:
    pixels = mnist_pixels[0][:500]
    projection = Projection.fit(pixels, 20)
    centred = pixels - pixels.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eigen = singular**2 / (len(pixels) - 1)
    np.testing.assert_allclose(projection.variances, eigen[:20], rtol=1e-4)
    # Same directions up to sign, orthonormal.
    np.testing.assert_allclose(np.abs(np.sum(projection.basis * vt[:20].T, axis=0)), 1, atol=1e-4)
    np.testing.assert_allclose(projection.basis.T @ projection.basis, np.eye(20), atol=1e-4)
    assert np.isclose(projection.residual_variance, eigen[20:].sum() / (784 - 20), rtol=1e-4)


def test_transform_has_the_fitted_spread(mnist_pixels: tuple[np.ndarray, np.ndarray]) -> None:
    pixels = mnist_pixels[0][:500]
    projection = Projection.fit(pixels, 10)
    coordinates = projection.transform(pixels)
    np.testing.assert_allclose(coordinates.var(axis=0, ddof=1), projection.variances, rtol=1e-3)
    whitened = projection.transform(pixels, whiten=True)
    np.testing.assert_allclose(whitened.var(axis=0, ddof=1), 1.0, rtol=1e-3)


def test_more_directions_than_rows_keeps_what_there_is(
    mnist_pixels: tuple[np.ndarray, np.ndarray],
) -> None:
    projection = Projection.fit(mnist_pixels[0][:15], 32)
    assert projection.dims == 15
    assert projection.transform(mnist_pixels[0][15:20]).shape == (5, 15)
