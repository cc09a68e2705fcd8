"""Maximum logit baseline."""

from __future__ import annotations

from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, register


@register
class MaxLogit(OutputDetector):
    """Maximum logit (Hendrycks et al., "Scaling OOD detection to real-world settings", ICML 2022).

    ``score(x) = -max_c f(x)_c``: unlike MSP it is not squashed by the softmax.
    """

    name = "maxlogit"
    uses_features = False
    label = "MaxLogit"

    def __init__(self, model):
        super().__init__(model)

    def score_outputs(self, logits: Tensor, features: Tensor | None = None) -> Tensor:
        return -logits.float().amax(dim=1)
