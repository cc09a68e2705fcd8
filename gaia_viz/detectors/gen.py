"""GEN: generalised entropy of the top softmax probabilities."""

from __future__ import annotations

from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, check_positive, register
from gaia_viz.errors import ModelError


@register
class GEN(OutputDetector):
    """GEN (Liu, Lochman & Zach, "GEN: pushing the limits of softmax-based
    out-of-distribution detection", CVPR 2023; code github.com/XixiLiu95/GEN).

    With the softmax probabilities ``p(x)`` sorted in decreasing order and
    ``M = min(top_m, classes)`` (``top_m = 100`` as the paper's ImageNet setting, so all
    classes for CIFAR-10)::

        score(x) = G_gamma(x) = sum_{j <= M} p_j^gamma * (1 - p_j)^gamma      (gamma = 0.1)

    The generalised entropy is high for flat (OOD-like) posteriors and is used directly; the
    reference code returns ``-G`` (ID-high). Computed in float64, without clamping.
    pytorch-ood 0.4.0's ``GEN`` differs by two conventions: it averages instead of summing
    (a factor ``1/M``, same ranks) and clamps ``p`` to ``[1e-7, 1 - 1e-7]`` first, which
    changes the scores (and can change ranks) of samples with a probability below ``1e-7``.
    No fit.
    """

    name = "gen"
    label = "GEN"
    uses_features = False

    def __init__(self, model, gamma: float = 0.1, top_m: int = 100):
        super().__init__(model)
        self.gamma = check_positive("gamma", gamma)
        if int(top_m) != top_m or int(top_m) < 1:
            raise ModelError(f"top_m must be a positive integer, got {top_m}.")
        self.top_m = int(top_m)

    def score_outputs(self, logits: Tensor, features: Tensor | None = None) -> Tensor:
        probabilities = logits.double().softmax(dim=1)
        top = probabilities.topk(min(self.top_m, probabilities.shape[1]), dim=1).values
        return (top.pow(self.gamma) * (1.0 - top).pow(self.gamma)).sum(dim=1).float()
