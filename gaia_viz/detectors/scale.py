"""SCALE: rescale all activations by the sharpening factor of ASH-S, without pruning."""

from __future__ import annotations

import torch
from torch import Tensor

from gaia_viz.detectors.base import register
from gaia_viz.detectors.shaping import ActivationShaping, sharpening_exponent, top_activations


@register
class SCALE(ActivationShaping):
    """SCALE (Xu, Chen, Franchi & Yao, "Scaling for training time and post-hoc
    out-of-distribution detection enhancement", ICLR 2024; code github.com/kai422/SCALE).

    Per sample, with the ``n`` activations ``a`` (the pooled features by default, see
    :mod:`gaia_viz.detectors.shaping` for ``placement``), ``s1 = sum(a)`` and ``s2`` the sum
    of its ``k = n - round(n * p / 100)`` largest (``p = percentile``, default 85)::

        scaled a = a * exp(s1 / s2)                          (nothing pruned)
        score(x) = -logsumexp(g(scaled a(x)))                (energy of the re-run head g)

    The paper's score is ``logsumexp`` (ID-high); it is negated here (OOD-high). Unlike
    ASH-S the top-k only sets the factor. Non-finite scores raise ModelError (see ASH).
    Matches pytorch-ood 0.4.0's ``SCALE`` fed the same activations (its ``percentile`` is a
    fraction, default 0.65). No fit.
    """

    name = "scale"
    label = "SCALE"

    def __init__(self, model, percentile: float = 85.0, placement: str = "pooled"):
        super().__init__(model, percentile, placement)

    def shape(self, flat: Tensor) -> Tensor:
        values, _ = top_activations(flat, self.percentile)
        return flat * torch.exp(sharpening_exponent(flat.sum(dim=1), values.sum(dim=1)))[:, None]
