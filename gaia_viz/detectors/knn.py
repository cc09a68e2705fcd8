"""Deep nearest neighbours on normalised penultimate features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, register
from gaia_viz.errors import ModelError


@register
class KNN(OutputDetector):
    """KNN (Sun, Ming, Zhu & Li, "Out-of-distribution detection with deep nearest
    neighbors", ICML 2022).

    ``fit`` stores the L2-normalised penultimate features ``z_i = h_i / ||h_i||`` of the ID
    data (labels unused). With ``z = h(x) / ||h(x)||``::

        score(x) = || z - z_(k) ||_2 = sqrt(2 - 2 <z, z_(k)>)

    where ``z_(k)`` is the k-th nearest stored feature (``k = 50`` by default, clamped to
    the number stored). The original code ranks by the squared distance; the order, and
    hence every metric, is the same. Similarities are computed as matrix products over
    chunks of ``chunk_size`` stored features so memory stays ``O(B * chunk_size)``.
    """

    name = "knn"
    label = "KNN"
    needs_fit = True
    fitted_keys = ("bank",)

    def __init__(self, model, k: int = 50, chunk_size: int = 8192):
        super().__init__(model)
        if int(k) < 1 or int(k) != k:
            raise ModelError(f"k must be a positive integer, got {k}.")
        if int(chunk_size) < 1:
            raise ModelError(f"chunk_size must be a positive integer, got {chunk_size}.")
        self.k = int(k)
        self.chunk_size = int(chunk_size)
        self.bank: Tensor | None = None

    @property
    def effective_k(self) -> int:
        """``min(k, number of stored ID features)``."""
        self._require_fit()
        return min(self.k, self.bank.shape[0])

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "KNN":
        self.bank = F.normalize(features.float(), dim=1)
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        k = self.effective_k
        queries = F.normalize(features.float().cpu(), dim=1)
        best = torch.empty(queries.shape[0], 0)
        for start in range(0, self.bank.shape[0], self.chunk_size):
            sims = queries @ self.bank[start : start + self.chunk_size].T
            best = torch.cat([best, sims], dim=1).topk(min(k, best.shape[1] + sims.shape[1]), dim=1).values
        kth_similarity = best[:, k - 1]
        return (2.0 - 2.0 * kth_similarity).clamp(min=0.0).sqrt()
