"""Maximum softmax probability baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, register


@register
class MSP(OutputDetector):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

    ``score(x) = -max_c softmax(f(x))_c``: confident predictions are ID, so the negated
    confidence is OOD-high. Range ``[-1, -1/C]``.
    """

    name = "msp"
    uses_features = False
    label = "MSP"

    def __init__(self, model):
        super().__init__(model)

    def score_outputs(self, logits: Tensor, features: Tensor | None = None) -> Tensor:
        return -torch.softmax(logits.float(), dim=1).amax(dim=1)
