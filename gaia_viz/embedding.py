"""2-D maps of feature vectors (the data map page): principal component analysis by SVD.

Pure numpy: ``features`` (N, D) in, coordinates (N, 2) out. Deterministic: no random
initialisation, and each component's sign is fixed (its largest loading is positive), so the
same features always give the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaia_viz.errors import MetricInputError


@dataclass(frozen=True)
class Projection:
    """A linear 2-D projection: ``coords = (features - mean) @ components.T``;
    ``explained``: the share of the total variance along each of the two axes."""

    coords: np.ndarray  # (N, 2)
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (2, D), orthonormal rows
    explained: np.ndarray  # (2,)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Other feature vectors (M, D) in the same 2-D coordinates."""
        return (np.asarray(features, dtype=np.float64) - self.mean) @ self.components.T


def pca_2d(features: np.ndarray) -> Projection:
    """The first two principal components of ``features`` (N, D), fitted on all rows.

    A feature with no spread contributes nothing; fewer than two informative directions
    give a zero second axis (explained share 0), never NaN. MetricInputError for fewer than
    two rows or non-finite features.

    >>> p = pca_2d(np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.1]]))
    >>> p.coords.shape, bool(p.explained[0] > 0.99)
    ((3, 2), True)
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise MetricInputError(f"a 2-D map needs at least two feature vectors (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise MetricInputError(f"{int((~np.isfinite(x)).sum())} feature values are not finite; the model's "
                               "penultimate features cannot be mapped")
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = np.zeros((2, x.shape[1]))
    k = min(2, vt.shape[0])
    components[:k] = vt[:k]
    for row in components:
        if np.any(row):
            row *= np.sign(row[np.argmax(np.abs(row))])
    variance = singular ** 2
    total = float(variance.sum())
    explained = np.zeros(2)
    if total > 0:
        explained[:k] = variance[:k] / total
    return Projection(centred @ components.T, mean, components, explained)


__all__ = ["Projection", "pca_2d"]
