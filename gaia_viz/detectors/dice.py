"""DICE: the energy of a head whose least-contributing weights are removed."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, check_percentile, energy_from_logits, register
from gaia_viz.models.heads import classifier_head


@register
class DICE(OutputDetector):
    """DICE (Sun & Li, "DICE: leveraging sparsification for out-of-distribution detection",
    ECCV 2022; code github.com/deeplearning-wisc/dice).

    ``fit`` takes the mean ID training feature ``m`` and the contribution matrix
    ``V = W * m`` (``V_cd = w_cd * m_d``, classes x features) and keeps the weights whose
    contribution is above the ``percentile``-th percentile of ``V`` (default 90: the 90 %
    smallest contributions are removed; ``np.percentile``, linear, as the reference code).
    With that mask ``M``::

        score(x) = -logsumexp((W * M) h(x) + b)              (energy of the sparsified head)

    The paper's ``logsumexp`` is ID-high; it is negated here (OOD-high). The mask is what
    is fitted (``weight_mask``); the weights and bias are read from the model's head.
    Labels are not used. pytorch-ood 0.4.0's ``DICE`` computes the same with ``p`` as a
    fraction and ``torch.quantile`` in float32 (a weight whose contribution ties the
    threshold to float32 precision can fall on the other side).
    """

    name = "dice"
    label = "DICE"
    needs_fit = True
    fitted_keys = ("weight_mask",)

    def __init__(self, model, percentile: float = 90.0):
        super().__init__(model)
        self.percentile = check_percentile("percentile", percentile, low_open=False, high_open=True)
        self.weight_mask: Tensor | None = None

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "DICE":
        weight, _ = classifier_head(self.model).weight_and_bias()
        contribution = weight * features.double().mean(dim=0)[None, :]
        threshold = float(np.percentile(contribution.numpy(), self.percentile))
        self.weight_mask = contribution > threshold
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        weight, bias = classifier_head(self.model).weight_and_bias()
        sparse_logits = features.double().cpu() @ (weight * self.weight_mask).T + bias
        return energy_from_logits(sparse_logits).float()
