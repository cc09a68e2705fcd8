"""ASH: extremely simple activation shaping."""

from __future__ import annotations

import torch
from torch import Tensor

from gaia_viz.detectors.base import register
from gaia_viz.detectors.shaping import ActivationShaping, sharpening_exponent, top_activations
from gaia_viz.errors import ModelError

VARIANTS = ("ASH-P", "ASH-B", "ASH-S")


@register
class ASH(ActivationShaping):
    """ASH (Djurisic, Bozanic, Ashok & Liu, "Extremely simple activation shaping for
    out-of-distribution detection", ICLR 2023; code github.com/andrijazz/ash).

    Per sample, of the ``n`` activations ``a`` (the pooled features by default, see
    :mod:`gaia_viz.detectors.shaping` for ``placement``) the ``k = n - round(n * p / 100)``
    largest are kept (``p = percentile``, default 90) and the rest set to 0; with
    ``s1 = sum(a)`` and ``s2`` the sum of the kept ones:

        ASH-P:  kept values unchanged
        ASH-B:  every kept value replaced by s1 / k          (binarised, sum preserved)
        ASH-S:  pruned a multiplied by exp(s1 / s2)          (sharpened; the default)

    The head ``g`` is re-run on the shaped activations and::

        score(x) = -logsumexp(g(shaped a(x)))                (energy, T = 1)

    The paper's score is ``logsumexp`` (ID-high); it is negated here (OOD-high). ASH assumes
    non-negative (post-ReLU) activations; non-finite scores (``s2 = 0`` on a sample that is
    not all zero, ``exp`` overflow) raise ModelError. ``variant`` is ``"ASH-S"``,
    ``"ASH-P"`` or ``"ASH-B"`` (case and the ``ASH-`` prefix optional). Matches pytorch-ood
    0.4.0's ``ASH`` fed the same activations (its ``percentile`` is a fraction, default 0.65;
    0.9 here is the paper's ImageNet setting). No fit.
    """

    name = "ash"
    label = "ASH"

    def __init__(self, model, variant: str = "ASH-S", percentile: float = 90.0, placement: str = "pooled"):
        super().__init__(model, percentile, placement)
        key = str(variant).strip().upper()
        key = key if key.startswith("ASH-") else f"ASH-{key}"
        if key not in VARIANTS:
            raise ModelError(f"ASH variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = key

    def shape(self, flat: Tensor) -> Tensor:
        values, indices = top_activations(flat, self.percentile)
        if self.variant == "ASH-B":
            values = (flat.sum(dim=1, keepdim=True) / values.shape[1]).expand_as(values)
        shaped = torch.zeros_like(flat).scatter_(1, indices, values)
        if self.variant == "ASH-S":
            shaped = shaped * torch.exp(sharpening_exponent(flat.sum(dim=1), shaped.sum(dim=1)))[:, None]
        return shaped
