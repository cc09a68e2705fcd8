"""Energy score."""

from __future__ import annotations

from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, check_positive, energy_from_logits, register


@register
class Energy(OutputDetector):
    """Energy score (Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020).

    ``score(x) = E(x; f) = -T * logsumexp_c(f(x)_c / T)``. The free energy is low on ID
    data and high on OOD data, so it is used directly. ``temperature`` T defaults to 1
    as in the paper.
    """

    name = "energy"
    uses_features = False
    label = "Energy"

    def __init__(self, model, temperature: float = 1.0):
        super().__init__(model)
        self.temperature = check_positive("temperature", temperature)

    def score_outputs(self, logits: Tensor, features: Tensor | None = None) -> Tensor:
        return energy_from_logits(logits.float(), self.temperature)
