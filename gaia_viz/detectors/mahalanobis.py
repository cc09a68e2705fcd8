"""Mahalanobis distance to class means with a tied covariance."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, register
from gaia_viz.errors import DataError, ModelError, UnlabelledFitWarning
from gaia_viz.notes import unlabelled_fit_note


@register
class Mahalanobis(OutputDetector):
    """Mahalanobis (Lee, Lee, Lee & Shin, "A simple unified framework for detecting
    out-of-distribution samples and adversarial attacks", NeurIPS 2018), on the
    penultimate features only and without input preprocessing or feature ensembles.

    ``fit`` estimates the class means ``mu_c`` and the tied covariance
    ``Sigma = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` from the ID training set;
    the precision is ``pinv(Sigma + ridge * tr(Sigma)/D * I)`` (``ridge`` keeps it stable
    when ``N < D`` or features are collinear). Then::

        score(x) = min_c (h(x) - mu_c)^T Sigma^-1 (h(x) - mu_c)

    i.e. the squared distance to the closest class, the negated confidence ``M(x)`` of the
    paper. Classes that have no training sample are left out of the minimum.

    Labels: this is the only detector that uses the loader's labels. Samples labelled
    ``-1`` (unknown) get the model's predicted class instead; ``label_source`` records
    ``"labels"``, ``"predicted"`` or ``"mixed"`` and an :class:`UnlabelledFitWarning` is
    issued when predictions were used (a sweep records it in its notes).
    """

    name = "mahalanobis"
    label = "Mahalanobis"
    needs_fit = True
    fitted_keys = ("means", "precision")
    uses_fit_labels = True

    def __init__(self, model, ridge: float = 1e-6):
        super().__init__(model)
        self.ridge = float(ridge)
        if self.ridge < 0:
            raise ModelError(f"ridge must be >= 0, got {self.ridge}.")
        self.means: Tensor | None = None
        self.precision: Tensor | None = None
        self.label_source: str | None = None

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "Mahalanobis":
        num_classes = logits.shape[1]
        unknown = labels < 0
        if unknown.any():
            labels = torch.where(unknown, logits.argmax(dim=1), labels)
            self.label_source = "predicted" if unknown.all() else "mixed"
            warnings.warn(unlabelled_fit_note(self.label, int(unknown.sum()), labels.numel(), "the fit set"),
                          UnlabelledFitWarning, stacklevel=2)
        else:
            self.label_source = "labels"
        if labels.max() >= num_classes:
            raise DataError(
                f"fit labels go up to {int(labels.max())} but the model has {num_classes} classes; "
                "fit on the model's own ID training set."
            )
        h = features.double()
        counts = torch.bincount(labels, minlength=num_classes)
        sums = torch.zeros(num_classes, h.shape[1], dtype=h.dtype).index_add_(0, labels, h)
        present = counts > 0
        means = sums[present] / counts[present, None]
        centred = h - sums.div(counts.clamp(min=1)[:, None])[labels]
        cov = centred.T @ centred / h.shape[0]
        dim = cov.shape[0]
        cov = cov + self.ridge * (torch.trace(cov) / dim) * torch.eye(dim, dtype=cov.dtype)
        self.means = means
        self.precision = torch.linalg.pinv(cov, hermitian=True)
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        h = features.double().cpu()
        hp = h @ self.precision
        # (h - mu)^T P (h - mu) = h^T P h - 2 h^T P mu + mu^T P mu, for all classes at once.
        quad_h = (hp * h).sum(dim=1, keepdim=True)
        quad_mu = ((self.means @ self.precision) * self.means).sum(dim=1)
        dist = quad_h - 2.0 * hp @ self.means.T + quad_mu[None, :]
        return dist.clamp(min=0.0).amin(dim=1).float()
