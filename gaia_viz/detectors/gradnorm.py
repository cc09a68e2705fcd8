"""GradNorm, batched through its closed form."""

from __future__ import annotations

import torch
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, check_positive, register


@register
class GradNorm(OutputDetector):
    """GradNorm (Huang, Geng & Li, "On the importance of gradients for detecting
    distributional shifts in the wild", NeurIPS 2021).

    The original score is ``S(x) = || dL/dW ||_1`` with
    ``L = KL(u || softmax(f(x)/T)) = const - (1/C) sum_c log softmax(f(x)/T)_c``,
    ``u`` the uniform distribution and ``W`` the weight of the last linear layer; ID inputs
    have *larger* norms. For ``logits = W h + b``, ``dL/dlogits = (p - u) / T`` with
    ``p = softmax(logits / T)``, so ``dL/dW = (p - u) h^T / T`` and

        ``S(x) = ||p - u||_1 * ||h||_1 / T``

    exactly, for the whole batch in one forward pass (no per-sample backward). As in the
    original code only the weight gradient counts, not the bias. The returned score is
    ``-S(x)`` so that OOD is high. ``temperature`` defaults to 1 as in the paper.
    """

    name = "gradnorm"
    label = "GradNorm"

    def __init__(self, model, temperature: float = 1.0):
        super().__init__(model)
        self.temperature = check_positive("temperature", temperature)

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        logits = logits.double()
        probs = torch.softmax(logits / self.temperature, dim=1)
        uniform = 1.0 / logits.shape[1]
        grad_norm = (probs - uniform).abs().sum(dim=1) * features.double().abs().sum(dim=1)
        return (-grad_norm / self.temperature).float()
