"""ViM: a virtual logit from the residual of the features against a principal subspace."""

from __future__ import annotations

import torch
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, register
from gaia_viz.errors import DataError, ModelError
from gaia_viz.models.heads import classifier_head

# a mean residual below this share of the mean feature norm is rounding error, not a residual
RESIDUAL_FLOOR = 1e-9


def principal_dim(feature_dim: int) -> int:
    """The paper's principal subspace size for ``feature_dim``-d features: 1000 for
    >= 2048-d (BiT, ResNet-50), 512 for >= 768-d (ViT, DeiT, Swin); below the paper's models,
    half the features (32 for ResNet-20's 64, as pytorch-ood's fallback)."""
    if feature_dim >= 2048:
        return 1000
    if feature_dim >= 768:
        return 512
    return feature_dim // 2


@register
class ViM(OutputDetector):
    """ViM (Wang, Li, Feng & Zhang, "ViM: out-of-distribution with virtual-logit matching",
    CVPR 2022; code github.com/haoqiwang/vim).

    With the head ``l(h) = W h + b``, the origin ``u = -pinv(W) b`` and the ID training
    features ``h_i``, ``fit`` takes the eigenvectors of ``1/N sum_i (h_i - u)(h_i - u)^T``
    beyond the ``dim`` largest eigenvalues as the residual basis ``R`` (``D x (D - dim)``)
    and ``alpha = mean_i max_c l_c(h_i) / mean_i ||(h_i - u) R||``. Then::

        score(x) = alpha * ||(h(x) - u) R|| - logsumexp_c l_c(h(x))

    the virtual logit minus the energy. The reference code's score is its negation
    (``-vlogit + energy``, ID-high); the paper's ViM score, the softmax probability of the
    virtual logit, ``sigmoid(score)``, ranks identically. ``dim`` None uses
    :func:`principal_dim`: the paper's rule (1000 for 2048-d features, 512 for 768-d) and,
    for the small features the paper has no model for, ``D // 2`` (32 for ResNet-20). A
    head without bias has ``u = 0``. Logits are recomputed from ``W``, ``b`` (float64).
    Labels are not used. pytorch-ood 0.4.0's ``ViM`` computes the same (float32).
    """

    name = "vim"
    label = "ViM"
    needs_fit = True
    fitted_keys = ("origin", "residual_basis", "alpha")

    def __init__(self, model, dim: int | None = None):
        super().__init__(model)
        if dim is not None and (int(dim) != dim or int(dim) < 1):
            raise ModelError(f"dim must be a positive integer (or None for the paper's rule), got {dim}.")
        self.dim = None if dim is None else int(dim)
        self.origin: Tensor | None = None
        self.residual_basis: Tensor | None = None
        self.alpha: float | None = None

    @property
    def principal_dim(self) -> int:
        """The principal subspace size used (after fitting)."""
        self._require_fit()
        return self.residual_basis.shape[0] - self.residual_basis.shape[1]

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "ViM":
        weight, bias = classifier_head(self.model).weight_and_bias()
        feature_dim = features.shape[1]
        dim = principal_dim(feature_dim) if self.dim is None else self.dim
        if not 0 < dim < feature_dim:
            raise ModelError(f"ViM's dim must be below the feature size {feature_dim}, got {dim}.")
        if features.shape[0] <= dim:  # the centred fit features span at most N dimensions: no residual beyond dim
            raise DataError(f"ViM: the {features.shape[0]} fit features have no residual outside the {dim}-d "
                            f"principal subspace (dim={dim} of {feature_dim} feature dimensions); fit on more ID "
                            f"training images than dim, or pass a dim below {features.shape[0]}")
        h = features.double()
        origin = -(torch.linalg.pinv(weight) @ bias)
        centred = h - origin
        _, eigenvectors = torch.linalg.eigh(centred.T @ centred / h.shape[0])  # ascending eigenvalues
        residual_basis = eigenvectors[:, : feature_dim - dim].contiguous()
        residual_norm = (centred @ residual_basis).norm(dim=1).mean()
        if not residual_norm > RESIDUAL_FLOOR * centred.norm(dim=1).mean():
            raise DataError(f"ViM: the {h.shape[0]} fit features have no residual outside the {dim}-d principal "
                            f"subspace (dim={dim} of {feature_dim} feature dimensions); fit on more ID training "
                            f"images than dim, or pass a dim below {h.shape[0]}")
        self.alpha = float((h @ weight.T + bias).max(dim=1).values.mean() / residual_norm)
        self.origin, self.residual_basis = origin, residual_basis
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        weight, bias = classifier_head(self.model).weight_and_bias()
        h = features.double().cpu()
        virtual_logit = self.alpha * ((h - self.origin) @ self.residual_basis).norm(dim=1)
        return (virtual_logit - torch.logsumexp(h @ weight.T + bias, dim=1)).float()
