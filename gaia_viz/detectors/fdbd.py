"""fDBD: feature distance to the classifier's decision boundaries."""

from __future__ import annotations

import torch
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, register
from gaia_viz.errors import ModelError
from gaia_viz.models.heads import classifier_head


def boundary_norms(weight: Tensor, rows: Tensor) -> Tensor:
    """``||w_r - w_c||`` for each ``r`` in ``rows`` and every class ``c``: ``(len(rows), C)``,
    through the Gram matrix so memory stays ``O(len(rows) * C)`` (float64 keeps the
    cancellation harmless)."""
    squared = (weight * weight).sum(dim=1)
    gram = weight[rows] @ weight.T
    return (squared[rows, None] + squared[None, :] - 2.0 * gram).clamp(min=0.0).sqrt()


@register
class FDBD(OutputDetector):
    """fDBD (Liu & Qin, "Fast decision boundary based out-of-distribution detector",
    ICML 2024; code github.com/litianliu/fDBD-OOD).

    With the head ``l_c(z) = w_c^T z + b_c``, the predicted class ``y = argmax_c l_c(z)``
    and the mean ``mu`` of the ID training features (``fit``), the distance of ``z`` to the
    boundary between ``y`` and ``c`` is ``|l_y(z) - l_c(z)| / ||w_y - w_c||``, and::

        score(x) = -1/(C-1) * sum_{c != y} |l_y - l_c| / ||w_y - w_c||  /  ||z(x) - mu||

    The paper's regularised average distance is ID-high; it is negated here (OOD-high). The
    reference code sums over the classes without the ``1/(C-1)`` (same ranks); pytorch-ood
    0.4.0 keeps it, as here. Two classes with identical weight rows have no boundary and
    are refused at fit. Labels are not used; no parameters.
    """

    name = "fdbd"
    label = "fDBD"
    needs_fit = True
    fitted_keys = ("train_mean",)

    def __init__(self, model):
        super().__init__(model)
        self.train_mean: Tensor | None = None

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "FDBD":
        weight, _ = classifier_head(self.model).weight_and_bias()
        classes = weight.shape[0]
        if classes < 2:
            raise ModelError("fDBD needs a classifier with at least two classes")
        norms = boundary_norms(weight, torch.arange(classes))
        norms.fill_diagonal_(1.0)
        if not bool((norms > 0).all()):
            pairs = (norms == 0).nonzero()[0].tolist()
            raise ModelError(f"fDBD: classes {pairs[0]} and {pairs[1]} have identical head weights, so there is "
                             "no decision boundary between them to measure")
        self.train_mean = features.double().mean(dim=0)
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        weight, bias = classifier_head(self.model).weight_and_bias()
        z = features.double().cpu()
        head_logits = z @ weight.T + bias
        top, predicted = head_logits.max(dim=1)
        norms = boundary_norms(weight, predicted)
        rows = torch.arange(len(z))
        norms[rows, predicted] = 1.0  # its logit gap is 0: the predicted class adds nothing
        distances = ((top[:, None] - head_logits) / norms).sum(dim=1) / (weight.shape[0] - 1)
        return (-distances / (z - self.train_mean).norm(dim=1)).float()
